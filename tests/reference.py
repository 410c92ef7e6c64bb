"""Independent NumPy implementations of the published update rules (float64)."""

import numpy as np


def _trust(weight_norm, update_norm, numerator, bounds=None):
    """numerator / ‖u‖, clipped to `bounds`; 1 if a norm is 0."""
    if weight_norm > 0 and update_norm > 0:
        ratio = numerator / update_norm
        return ratio if bounds is None else min(max(ratio, bounds[0]), bounds[1])
    return 1.0


def lamb_step(w, g, m, v, t, lr, beta_1, beta_2, epsilon, weight_decay,
              decays, adapts, bias_correction=True, weight_norm_bounds=None,
              trust_ratio_bounds=None):
    """One LAMB step (arXiv:1904.00962 v3, Algorithm 2); returns new (w, m, v)."""
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g * g
    m_hat, v_hat = m, v
    if bias_correction:
        m_hat = m / (1 - beta_1**t)
        v_hat = v / (1 - beta_2**t)
    u = m_hat / (np.sqrt(v_hat) + epsilon)
    if decays:
        u = u + weight_decay * w
    ratio = 1.0
    if adapts:
        w_norm = np.linalg.norm(w)
        phi = w_norm if weight_norm_bounds is None else np.clip(w_norm, *weight_norm_bounds)
        ratio = _trust(w_norm, np.linalg.norm(u), phi, trust_ratio_bounds)
    return w - lr * ratio * u, m, v


def adam_weight_decay_step(w, g, m, v, lr, beta_1, beta_2, epsilon, weight_decay, decays):
    """One step of BERT's AdamWeightDecayOptimizer; returns new (w, m, v)."""
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g * g
    u = m / (np.sqrt(v) + epsilon)
    if decays:
        u = u + weight_decay * w
    return w - lr * u, m, v


def lars_step(w, g, v, lr, momentum, weight_decay, eeta, nesterov, decays, adapts,
              formula="decayed", epsilon=0.0, trust_ratio_bounds=None):
    """One classic-momentum LARS step; returns new (w, v).

    `formula="decayed"`: ratio eeta·‖w‖/‖g + λw‖ (google-research/simclr);
    `"separate"`: eeta·‖w‖/(‖g‖ + λ‖w‖ + ε) on the raw gradient
    (tf.contrib.opt.LARSOptimizer). Both step along g + λw.
    """
    decay = weight_decay if decays else 0.0
    d = g + decay * w
    ratio = 1.0
    if adapts:
        w_norm = np.linalg.norm(w)
        if formula == "decayed":
            ratio = _trust(w_norm, np.linalg.norm(d), eeta * w_norm, trust_ratio_bounds)
        else:
            g_norm = np.linalg.norm(g)
            if w_norm > 0 and g_norm > 0:
                ratio = eeta * w_norm / (g_norm + decay * w_norm + epsilon)
                if trust_ratio_bounds is not None:
                    ratio = min(max(ratio, trust_ratio_bounds[0]), trust_ratio_bounds[1])
    scaled = lr * ratio * d
    v = momentum * v + scaled
    update = momentum * v + scaled if nesterov else v
    return w - update, v


def bert_learning_rate(step, init_lr, num_train_steps, num_warmup_steps,
                       end_learning_rate=0.0, power=1.0):
    """The learning rate BERT's `create_optimizer` computes at `global_step`."""
    decay_step = min(step, num_train_steps)
    lr = (init_lr - end_learning_rate) * (1 - decay_step / num_train_steps) ** power
    lr += end_learning_rate
    if num_warmup_steps and step < num_warmup_steps:
        lr = init_lr * step / num_warmup_steps
    return lr


def warmup_decay_learning_rate(step, peak, decay_steps, warmup_steps, decay="polynomial",
                               end_learning_rate=0.0, power=1.0, alpha=0.0, warmup_power=1.0,
                               decay_after_warmup=False, start_warmup_step=0):
    """Warmup then polynomial (BERT, HuggingFace's `power` warmup) or cosine
    (HuggingFace's `get_cosine_schedule_with_warmup`, Keras's `alpha` floor)
    decay, with the decay counted from step 0 or from the warmup's end."""
    t = max(step - start_warmup_step, 0)
    if t < warmup_steps:
        return peak * (t / warmup_steps) ** warmup_power
    if not decay_after_warmup:
        progress = min(t / decay_steps, 1.0)
    elif decay_steps == warmup_steps:
        progress = 1.0
    else:
        progress = min((t - warmup_steps) / (decay_steps - warmup_steps), 1.0)
    if decay == "cosine":
        return peak * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * progress)))
    return (peak - end_learning_rate) * (1 - progress) ** power + end_learning_rate
