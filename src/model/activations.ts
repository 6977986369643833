import * as tf from '../tf';
import erf from '@stdlib/math-base-special-erf';
import { ConfigError, quote } from '../errors';

export type Activation = (x: tf.Tensor) => tf.Tensor;

/** OpenAI CLIP's `x * sigmoid(1.702 x)`. */
export const quickGelu: Activation = (x) => tf.tidy(() => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))));

/** HF `gelu_new` / torch `gelu(approximate='tanh')`: the tanh approximation, written out as HF does. */
export const geluTanh: Activation = (x) =>
  tf.tidy(() => {
    const inner = tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3))));
    return tf.mul(tf.mul(0.5, x), tf.add(1, tf.tanh(inner)));
  });

/**
 * Exact (erf) GELU, torch's `nn.GELU()`: `x * 0.5 * (1 + erf(x / sqrt 2))`. The wasm and TensorFlow
 * backends compute erf to within an ulp; tfjs-backend-cpu uses a 1.5e-7 polynomial, too coarse for
 * parity, so there the forward runs in float64 JS. The gradient is d/dx = Φ(x) + x·φ(x) either way.
 */
export const geluErf: Activation = (x) => geluErfOp(x);

const geluErfOp = tf.customGrad<tf.Tensor>((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  save([x]);
  const value =
    tf.getBackend() === 'cpu'
      ? geluErfJs(x)
      : tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [input] = saved;
      return tf.tidy(() => {
        const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(input, Math.SQRT1_2))));
        const pdf = tf.mul(1 / Math.sqrt(2 * Math.PI), tf.exp(tf.mul(-0.5, tf.square(input))));
        return tf.mul(dy, tf.add(cdf, tf.mul(input, pdf)));
      });
    },
  };
});

function geluErfJs(x: tf.Tensor): tf.Tensor {
  const v = x.dataSync() as Float32Array;
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] * 0.5 * (1 + erf(v[i] * Math.SQRT1_2));
  return tf.tensor(out, x.shape, 'float32');
}

const ACTIVATIONS: Record<string, Activation> = {
  quick_gelu: quickGelu,
  gelu: geluErf,
  gelu_new: geluTanh,
  gelu_pytorch_tanh: geluTanh,
};

export function activationByName(name: string, where = 'hidden_act'): Activation {
  const act = ACTIVATIONS[name];
  if (!act)
    throw new ConfigError(
      `${where} ${quote(name)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`,
    );
  return act;
}
