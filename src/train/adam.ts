import * as tf from '../tf';
import { ConfigError } from '../errors';

export interface TorchAdamConfig {
  /** `lr`, default 1e-3 (torch's default). */
  learningRate?: number;
  /** `betas[0]`, default 0.9. */
  beta1?: number;
  /** `betas[1]`, default 0.999. */
  beta2?: number;
  /** `eps`, default 1e-8 (tfjs's `tf.train.adam` defaults to the backend epsilon, 1e-7). */
  epsilon?: number;
  /** `weight_decay`: classic L2, added to the gradient (`grad + wd * param`), not AdamW. Default 0. */
  weightDecay?: number;
  /** `amsgrad`, default false. */
  amsgrad?: boolean;
}

/** tfjs-core's NamedTensor (not re-exported by @tensorflow/tfjs). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

interface ParamState {
  step: number;
  m: tf.Variable;
  v: tf.Variable;
  vMax: tf.Variable | null;
}

/**
 * `torch.optim.Adam` (torch ≥ 2.0, single-tensor path, `maximize=False`), step for step:
 *
 *     t += 1                                  (per parameter, like torch's state['step'])
 *     g  = grad + weight_decay * p            (only when weight_decay != 0)
 *     m  = m + (1 - beta1) * (g - m)          (torch: exp_avg.lerp_(g, 1 - beta1))
 *     v  = beta2 * v + (1 - beta2) * g * g
 *     vMax = max(vMax, v)                     (amsgrad only; then used instead of v)
 *     denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *     p  = p - (lr / (1 - beta1^t)) * m / denom
 *
 * The bias corrections `1 - beta^t`, `lr / (1 - beta1^t)` and `sqrt(1 - beta2^t)` are computed in
 * float64 on the host (as torch does in Python) and enter the float32 ops as scalars.
 *
 * How `tf.train.adam` (tfjs-core 4.22 `AdamOptimizer`) differs:
 * - Default epsilon: `tf.train.adam(lr, b1, b2)` takes `ENGINE.backend.epsilon()` = 1e-7 on the
 *   cpu/wasm/tensorflow backends (1e-4 on WebGL without float32 textures), torch's default is 1e-8.
 *   On the first step the update is `lr * g / (|g| + eps)`, so for small gradients the default
 *   changes the step noticeably (the parity test shows it exceeds the golden bound).
 * - Where epsilon goes: tfjs computes `m̂ / (sqrt(v / (1 - beta2^t)) + eps)` — eps is also added
 *   after the square root of the bias-corrected second moment, i.e. the same formula as torch up to
 *   rounding (NOT the TF/Keras-Python "epsilon hat" form `lr·sqrt(1-b2^t)/(1-b1^t) · m/(sqrt(v)+eps)`,
 *   which scales eps by sqrt(1 - beta2^t)).
 * - Bias corrections: tfjs keeps `beta^t` in float32 variables multiplied once per step (and
 *   `1 - beta^t` in float32); torch uses float64 Python floats. Rounding-level only.
 * - State: tfjs keys its moments by the position of the variable in each call (a different varList
 *   order silently mixes states) and has one global step; this class keys state by variable name and
 *   counts steps per parameter (a parameter that got no gradient is not stepped, like torch).
 * - No `weight_decay` / `amsgrad` in `tf.train.adam`.
 */
export class TorchAdam extends tf.Optimizer {
  static readonly className = 'TorchAdam';
  private learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  readonly amsgrad: boolean;
  private state = new Map<string, ParamState>();

  constructor(config: TorchAdamConfig = {}) {
    super();
    this.learningRate = config.learningRate ?? 1e-3;
    this.beta1 = config.beta1 ?? 0.9;
    this.beta2 = config.beta2 ?? 0.999;
    this.epsilon = config.epsilon ?? 1e-8;
    this.weightDecay = config.weightDecay ?? 0;
    this.amsgrad = config.amsgrad ?? false;
    // torch.optim.Adam's own argument checks.
    const check = (ok: boolean, what: string) => {
      if (!ok) throw new ConfigError(`TorchAdam: invalid ${what}`);
    };
    check(this.learningRate >= 0, `learning rate ${this.learningRate}`);
    check(this.epsilon >= 0, `epsilon ${this.epsilon}`);
    check(this.beta1 >= 0 && this.beta1 < 1, `beta1 ${this.beta1} (must be in [0, 1))`);
    check(this.beta2 >= 0 && this.beta2 < 1, `beta2 ${this.beta2} (must be in [0, 1))`);
    check(this.weightDecay >= 0, `weight decay ${this.weightDecay}`);
  }

  /** Learning-rate schedules: the next steps use `lr`. */
  setLearningRate(lr: number): void {
    if (!(lr >= 0)) throw new ConfigError(`TorchAdam: invalid learning rate ${lr}`);
    this.learningRate = lr;
  }

  getLearningRate(): number {
    return this.learningRate;
  }

  /** Steps taken by the parameter named `name` (torch `state[p]['step']`), 0 if never stepped. */
  stepOf(name: string): number {
    return this.state.get(name)?.step ?? 0;
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const pairs: [string, tf.Tensor | undefined][] = Array.isArray(variableGradients)
      ? variableGradients.map((g) => [g.name, g.tensor])
      : Object.entries(variableGradients);
    const registered = tf.engine().registeredVariables;
    const [beta1, beta2, eps, wd, lr] = [this.beta1, this.beta2, this.epsilon, this.weightDecay, this.learningRate];
    for (const [name, grad] of pairs) {
      if (grad == null) continue;
      const param = registered[name];
      if (!param) throw new ConfigError(`TorchAdam: no variable named "${name}" is registered`);
      let st = this.state.get(name);
      if (!st) {
        const zeros = () => tf.tidy(() => tf.zerosLike(param).variable(false));
        st = { step: 0, m: zeros(), v: zeros(), vMax: this.amsgrad ? zeros() : null };
        this.state.set(name, st);
      }
      const s = st;
      s.step += 1;
      const t = s.step;
      const biasCorrection1 = 1 - beta1 ** t;
      const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** t);
      const stepSize = lr / biasCorrection1;
      tf.tidy(() => {
        const g = wd !== 0 ? tf.add(grad, tf.mul(param, wd)) : grad;
        const m = tf.add(s.m, tf.mul(tf.sub(g, s.m), 1 - beta1));
        const v = tf.add(tf.mul(s.v, beta2), tf.mul(tf.mul(g, g), 1 - beta2));
        s.m.assign(m);
        s.v.assign(v);
        let second: tf.Tensor = v;
        if (s.vMax) {
          s.vMax.assign(tf.maximum(s.vMax, v));
          second = s.vMax;
        }
        const denom = tf.add(tf.div(tf.sqrt(second), biasCorrection2Sqrt), eps);
        param.assign(tf.sub(param, tf.div(tf.mul(m, stepSize), denom)));
      });
    }
    this.incrementIterations();
  }

  override dispose(): void {
    for (const s of this.state.values()) tf.dispose([s.m, s.v, ...(s.vMax ? [s.vMax] : [])]);
    this.state.clear();
  }

  /** `[iterations, <var>/m, <var>/v, (<var>/vmax), <var>/step, ...]`, keyed by variable name. */
  override async getWeights(): Promise<NamedTensor[]> {
    const out: NamedTensor[] = [await this.saveIterations()];
    for (const [name, s] of this.state) {
      out.push({ name: `${name}/m`, tensor: s.m }, { name: `${name}/v`, tensor: s.v });
      if (s.vMax) out.push({ name: `${name}/vmax`, tensor: s.vMax });
      out.push({ name: `${name}/step`, tensor: tf.scalar(s.step, 'int32') });
    }
    return out;
  }

  /** Restores what getWeights returned (the tensors are copied; the caller keeps ownership). */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    const groups = new Map<string, Record<string, tf.Tensor>>();
    for (const { name, tensor } of rest) {
      const match = /^(.*)\/(m|v|vmax|step)$/.exec(name);
      if (!match)
        throw new ConfigError(
          `TorchAdam.setWeights: unexpected weight "${name}" (expected <variable>/{m,v,vmax,step})`,
        );
      const group = groups.get(match[1]) ?? {};
      group[match[2]] = tensor;
      groups.set(match[1], group);
    }
    for (const [name, g] of groups) {
      if (!g.m || !g.v || !g.step) throw new ConfigError(`TorchAdam.setWeights: "${name}" needs m, v and step`);
      if (this.amsgrad && !g.vmax)
        throw new ConfigError(`TorchAdam.setWeights: "${name}" has no vmax but amsgrad is on`);
    }
    // Copy first: the given tensors may be this optimizer's own state (from its getWeights).
    const copies = [...groups].map(([name, g]) => ({
      name,
      step: g.step.dataSync()[0],
      m: g.m.clone(),
      v: g.v.clone(),
      vMax: this.amsgrad ? g.vmax.clone() : null,
    }));
    this.dispose();
    const toVariable = (t: tf.Tensor) => {
      const variable = t.variable(false);
      t.dispose();
      return variable;
    };
    for (const c of copies) {
      this.state.set(c.name, {
        step: c.step,
        m: toVariable(c.m),
        v: toVariable(c.v),
        vMax: c.vMax ? toVariable(c.vMax) : null,
      });
    }
  }

  getConfig(): tf.serialization.ConfigDict {
    return {
      learningRate: this.learningRate,
      beta1: this.beta1,
      beta2: this.beta2,
      epsilon: this.epsilon,
      weightDecay: this.weightDecay,
      amsgrad: this.amsgrad,
    };
  }

  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config);
  }
}
tf.serialization.registerClass(TorchAdam);
