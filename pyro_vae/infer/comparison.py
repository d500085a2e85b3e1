"""Paired comparison of two models' per-datapoint log-likelihood estimates.
"""

import math
from dataclasses import dataclass, fields

from .diagnostics import standard_error


@dataclass
class Comparison:
    """Paired comparison of two models' log-likelihood estimates on the same test points.

    :ivar float difference: mean over datapoints of ``log p_A(x_n) - log p_B(x_n)``, nats.
    :ivar float se: its paired standard error, ``std_n(d_n) / sqrt(N)``, nats.
    :ivar float z: ``difference / se``.
    :ivar str verdict: a plain sentence: which is better, or that the difference is
        within two standard errors.
    """

    name_a: str
    name_b: str
    difference: float
    se: float
    z: float
    verdict: str
    num_datapoints: int

    def summary(self):
        """JSON-safe dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def compare(result_a, result_b, name_a="A", name_b="B"):
    """Paired comparison of two :class:`LogLikelihoodResult` (or
    :class:`~pyro_vae.infer.AISResult`) on the same test points.

    Pairing removes the spread between datapoints (some images are simply harder) from the
    error of the difference, so the paired standard error is usually far smaller than
    either model's own standard error.

    :returns: :class:`Comparison`. A difference larger than twice its standard error is
        called significant.
    :raises ValueError: if the results were not computed on the same data (their
        fingerprints or sizes differ).
    """
    if result_a.fingerprint != result_b.fingerprint or \
            result_a.num_datapoints != result_b.num_datapoints:
        raise ValueError(f"{name_a} and {name_b} were evaluated on different data "
                         f"(fingerprints {result_a.fingerprint} vs {result_b.fingerprint}, "
                         f"{result_a.num_datapoints} vs {result_b.num_datapoints} points); a paired "
                         "comparison needs the same test points, binarized the same way")
    d = result_a.log_likelihood.double() - result_b.log_likelihood.double()
    diff, se = float(d.mean()), standard_error(d)
    z = diff / se if se > 0 else (math.inf if diff != 0 else 0.0)
    if abs(z) > 2:
        better, worse = (name_a, name_b) if diff > 0 else (name_b, name_a)
        verdict = (f"{better} has the higher test log-likelihood: by {abs(diff):.3f} +- {se:.3f} "
                   f"nats per datapoint ({abs(z):.1f} paired standard errors) over {worse}")
    else:
        verdict = (f"no significant difference: {diff:+.3f} +- {se:.3f} nats per datapoint is "
                   "within two paired standard errors")
    k_a, k_b = getattr(result_a, "num_particles", None), getattr(result_b, "num_particles", None)
    if k_a is not None and k_b is not None and k_a != k_b:
        verdict += (f" (note: k differs, {result_a.num_particles} vs {result_b.num_particles}; "
                    "the bound with fewer particles is looser)")
    return Comparison(name_a, name_b, diff, se, z, verdict, result_a.num_datapoints)
