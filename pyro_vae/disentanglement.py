"""Disentanglement metrics of a model's codes on data with known generative factors.

The inputs are ``codes``, an (N, D) float array (one row per image: the guide's mean, say)
and ``factors``, an (N, F) integer array of the known factor values of each image (for
dSprites: shape, scale, orientation, x, y), the factors independent and each uniform over
its values. Two metrics:

- MIG, the mutual information gap of Chen et al. 2018, "Isolating Sources of
  Disentanglement in Variational Autoencoders", arXiv:1802.04942, with the histogram
  estimate of the mutual information of Locatello et al. 2019, "Challenging Common
  Assumptions in the Unsupervised Learning of Disentangled Representations",
  arXiv:1811.12359;
- DCI (disentanglement, completeness, informativeness) of Eastwood & Williams 2018, "A
  Framework for the Quantitative Evaluation of Disentangled Representations", ICLR 2018,
  https://openreview.net/forum?id=By-7dz-AZ, with random-forest feature importances.

All information is in nats. Both take torch tensors or numpy arrays; bad input raises
:class:`~pyro_vae.errors.DataError` (a ``ValueError``).
"""

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import mutual_info_score

from .errors import DataError


def _as_numpy(x):
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(codes, factors):
    """``codes`` as float64 (N, D) and ``factors`` as int64 (N, F), or a DataError."""
    codes, factors = _as_numpy(codes), _as_numpy(factors)
    if codes.ndim != 2:
        raise DataError(f"codes must be a 2-D (N, D) array, one row per image; got shape "
                        f"{codes.shape}")
    if factors.ndim != 2:
        raise DataError(f"factors must be a 2-D (N, F) array of factor indices, one row per "
                        f"image; got shape {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise DataError(f"codes and factors must have one row per image each, but codes has "
                        f"{codes.shape[0]} rows and factors {factors.shape[0]}")
    if codes.shape[1] == 0 or factors.shape[1] == 0:
        raise DataError(f"need at least one code dimension and one factor; got codes "
                        f"{codes.shape} and factors {factors.shape}")
    codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise DataError(f"codes hold {int((~np.isfinite(codes)).sum())} NaN or infinite "
                        f"values; disentanglement metrics need finite codes")
    if not np.issubdtype(factors.dtype, np.integer):
        as_int = np.rint(factors.astype(np.float64))
        if not np.array_equal(as_int, factors):
            raise DataError("factors must hold integer indices of the factor values")
        factors = as_int
    factors = factors.astype(np.int64)
    for k in range(factors.shape[1]):
        if len(np.unique(factors[:, k])) < 2:
            raise DataError(f"factor {k} takes fewer than 2 distinct values in these "
                            f"{factors.shape[0]} rows; it carries no information to measure")
    return codes, factors


def discretize(codes, bins=20):
    """Each column of ``codes`` (N, D) cut into ``bins`` equal-width bins over its range.

    Bin edges as :func:`numpy.histogram_bin_edges`; a value's bin is its
    :func:`numpy.digitize` index among the lower edges, so 1..``bins`` (int64, (N, D)). A
    constant column falls in one bin.
    """
    codes = _as_numpy(codes)
    out = np.empty(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, i], bins=bins)
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def mutual_information_matrix(codes, factors, bins=20):
    """The (D, F) numpy matrix of mutual informations I(z_i; v_k), in nats.

    ``codes`` (N, D) is discretized per dimension into ``bins`` equal-width bins over its
    range (:func:`discretize`); I(z_i; v_k) is then the mutual information of the empirical
    joint distribution of bin and factor index, ``sklearn.metrics.mutual_info_score``:
    sum_{a,b} p(a, b) log(p(a, b) / (p(a) p(b))). A constant code dimension gives 0.
    This is the histogram estimator of Locatello et al. 2019, arXiv:1811.12359; it is
    biased upwards by about (bins - 1)(|V_k| - 1) / (2N) nats for independent variables.

    :raises DataError: (a ValueError) for non-2-D inputs, a different number of rows,
        non-finite codes, non-integer factors or a factor with fewer than 2 values.
    """
    codes, factors = _check(codes, factors)
    binned = discretize(codes, bins)
    return np.array([[mutual_info_score(factors[:, k], binned[:, i])
                      for k in range(factors.shape[1])] for i in range(codes.shape[1])])


def factor_entropies(factors):
    """The (F,) entropies H(v_k) = -sum_v p(v) log p(v) in nats of each factor's empirical
    distribution over the N rows of ``factors`` (N, F)."""
    factors = _as_numpy(factors)
    return np.array([mutual_info_score(factors[:, k], factors[:, k])
                     for k in range(factors.shape[1])])


@dataclass
class MIGResult:
    """The mutual information gap and what it was computed from.

    :ivar float mig: the mean of ``per_factor`` over the factors, in [0, 1].
    :ivar per_factor: (F,) normalized gap of each factor.
    :ivar mutual_information: (D, F) I(z_i; v_k) in nats.
    :ivar factor_entropy: (F,) H(v_k) in nats.
    :ivar int bins: histogram bins per code dimension.
    """

    mig: float
    per_factor: np.ndarray
    mutual_information: np.ndarray
    factor_entropy: np.ndarray
    bins: int


def mutual_information_gap(codes, factors, bins=20):
    """MIG of Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs",
    arXiv:1802.04942: for each factor k, with I the (D, F) mutual informations of
    :func:`mutual_information_matrix`,

        MIG_k = (I(z_{j1}; v_k) - I(z_{j2}; v_k)) / H(v_k),

    j1 and j2 the code dimensions of the largest and second-largest information about v_k,
    H(v_k) the entropy (nats) of its empirical distribution; ``mig`` is the mean over k.
    1 when each factor is carried by one code dimension that the others do not share; 0
    when two dimensions carry equally much of it (or none does). It does not penalize one
    dimension carrying two factors.

    The mutual information is the histogram estimate of Locatello et al. 2019,
    arXiv:1811.12359 (``bins`` equal-width bins per code dimension), not Chen et al.'s
    estimate sampling the aggregate posterior q(z).

    :param codes: (N, D) codes, D >= 2; torch tensor or numpy array.
    :param factors: (N, F) integer factor indices.
    :returns: a :class:`MIGResult`.
    :raises DataError: (a ValueError) if D < 2, or for the bad inputs listed in
        :func:`mutual_information_matrix`.
    """
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise DataError(f"MIG needs at least two code dimensions (it is a gap between the "
                        f"two most informative), but the codes have {codes.shape[1]}")
    mi = mutual_information_matrix(codes, factors, bins)
    entropy = factor_entropies(factors)
    top = -np.sort(-mi, axis=0)
    per_factor = (top[0] - top[1]) / entropy
    return MIGResult(float(per_factor.mean()), per_factor, mi, entropy, bins)


def _normalized_entropy(p, base):
    """Entropy of each row of ``p`` (rows summing to 1) with log base ``base``."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1) / np.log(base)


def dci_scores(importance):
    """Disentanglement and completeness of an importance matrix R (D, F), R >= 0, after
    Eastwood & Williams 2018 (ICLR 2018, https://openreview.net/forum?id=By-7dz-AZ).

    Disentanglement: D_i = 1 - H_F(P_i.) with P_ij = R_ij / sum_k R_ik and H_F the entropy
    with log base F; overall sum_i rho_i D_i with rho_i = sum_j R_ij / sum_ij R_ij (a
    dimension of zero importance weighs 0). Completeness: C_j = 1 - H_D(P~_.j) with
    P~_ij = R_ij / sum_i R_ij, log base D; overall the mean over factors (a factor that no
    dimension predicts has C_j = 0). With F = 1 every D_i is 1, with D = 1 every C_j is 1.

    :returns: (disentanglement, completeness, per_code (D,), per_factor (F,)).
    :raises DataError: if R is not 2-D or has negative or non-finite entries.
    """
    r = _as_numpy(importance).astype(np.float64)
    if r.ndim != 2 or not np.isfinite(r).all() or (r < 0).any():
        raise DataError("an importance matrix must be 2-D, finite and non-negative")
    n_codes, n_factors = r.shape
    row, col, total = r.sum(axis=1), r.sum(axis=0), r.sum()
    p = r / np.where(row > 0, row, 1.0)[:, None]
    per_code = (1.0 - _normalized_entropy(p, n_factors) if n_factors > 1
                else np.ones(n_codes)) * (row > 0)
    q = (r / np.where(col > 0, col, 1.0)).T
    per_factor = (1.0 - _normalized_entropy(q, n_codes) if n_codes > 1
                  else np.ones(n_factors)) * (col > 0)
    disentanglement = float((row / total * per_code).sum()) if total > 0 else 0.0
    return disentanglement, float(per_factor.mean()), per_code, per_factor


@dataclass
class DCIResult:
    """DCI scores, the importance matrix they come from and the settings.

    :ivar float disentanglement: weighted mean of per-code disentanglement, in [0, 1].
    :ivar float completeness: mean over factors of per-factor completeness, in [0, 1].
    :ivar float informativeness: mean over factors of the classifiers' test accuracy.
    :ivar importance: (D, F) feature importances R_ik of code i for factor k.
    :ivar per_code: (D,) disentanglement D_i; ``per_factor``: (F,) completeness C_j.
    :ivar accuracy: (F,) test accuracy of each factor's classifier.
    :ivar train_fraction: the settings, with ``seed``, ``n_estimators``, ``max_depth``
        and ``max_features``, of :func:`dci`.
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray
    per_code: np.ndarray
    per_factor: np.ndarray
    accuracy: np.ndarray
    train_fraction: float
    seed: int
    n_estimators: int
    max_depth: int
    max_features: object = None

    def regressor(self):
        """The classifier, as text for a report."""
        return (f"RandomForestClassifier(n_estimators={self.n_estimators}, "
                f"max_depth={self.max_depth}, max_features={self.max_features!r}, "
                f"random_state={self.seed})")


def dci(codes, factors, train_fraction=0.8, seed=0, n_estimators=50, max_depth=8,
        max_features=None):
    """DCI of Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of
    Disentangled Representations", ICLR 2018, https://openreview.net/forum?id=By-7dz-AZ.

    The rows are split, by a permutation seeded with ``seed``, into a train part
    (``train_fraction``) and a test part. For each factor k a
    ``sklearn.ensemble.RandomForestClassifier(n_estimators, max_depth, max_features,
    random_state=seed, n_jobs=1)`` learns the factor index from the codes on the train part
    (``max_features=None``: every split takes the best of all code dimensions;
    ``"sqrt"`` is about twice as fast but spreads importance onto uninformative ones); its
    ``feature_importances_`` (mean impurity decrease, summing to 1) are column k of the
    importance matrix R (D, F). Disentanglement and completeness of R are those of
    :func:`dci_scores`; informativeness is the mean test accuracy of the classifiers (the
    paper uses prediction error; accuracy suits the discrete factors here).
    About 15 s for N = 10,000, D = 10, F = 5 on one core.

    :param codes: (N, D) codes; torch tensor or numpy array.
    :param factors: (N, F) integer factor indices.
    :returns: a :class:`DCIResult`.
    :raises DataError: (a ValueError) if ``train_fraction`` leaves either part empty, or for
        the bad inputs listed in :func:`mutual_information_matrix`.
    """
    codes, factors = _check(codes, factors)
    n = codes.shape[0]
    n_train = int(round(train_fraction * n))
    if not 0 < n_train < n:
        raise DataError(f"train_fraction={train_fraction} of {n} rows leaves the train or "
                        f"the test part empty")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:n_train], order[n_train:]
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    accuracy = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                        max_features=max_features, random_state=seed,
                                        n_jobs=1)
        forest.fit(codes[train], factors[train, k])
        importance[:, k] = forest.feature_importances_
        accuracy[k] = forest.score(codes[test], factors[test, k])
    d, c, per_code, per_factor = dci_scores(importance)
    return DCIResult(d, c, float(accuracy.mean()), importance, per_code, per_factor,
                     accuracy, train_fraction, seed, n_estimators, max_depth, max_features)


def disentanglement_metrics(codes, factors, factor_names=None, bins=20, seed=0,
                            max_points=10000):
    """MIG and DCI of ``codes`` (N, D) against ``factors`` (N, F), as a JSON-ready dict.

    At most ``max_points`` rows are used, drawn without replacement by
    ``np.random.default_rng(seed)``; MIG is :func:`mutual_information_gap` (Chen et al.
    2018, arXiv:1802.04942, histogram estimate of Locatello et al. 2019,
    arXiv:1811.12359) with ``bins`` bins, DCI is :func:`dci` (Eastwood & Williams 2018,
    https://openreview.net/forum?id=By-7dz-AZ) with ``seed``. Information in nats.

    :param factor_names: F names (default ``factor0``, ``factor1``, ...).
    :returns: ``{"mig", "mig_per_factor": {name: float}, "dci": {"disentanglement",
        "completeness", "informativeness"}, "mutual_information": D x F lists,
        "importance": D x F lists, "factor_names", "settings"}``.
    :raises DataError: (a ValueError) if ``factor_names`` does not hold F names, or for
        the bad inputs of :func:`mutual_information_gap` and :func:`dci`.
    """
    codes, factors = _check(codes, factors)
    n_factors = factors.shape[1]
    names = [f"factor{k}" for k in range(n_factors)] if factor_names is None \
        else [str(name) for name in factor_names]
    if len(names) != n_factors:
        raise DataError(f"{len(names)} factor names for {n_factors} factors")
    if codes.shape[0] > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(codes.shape[0], max_points,
                                                          replace=False))
        codes, factors = codes[rows], factors[rows]
    mig = mutual_information_gap(codes, factors, bins)
    scores = dci(codes, factors, seed=seed)
    return {
        "mig": mig.mig,
        "mig_per_factor": {name: float(v) for name, v in zip(names, mig.per_factor)},
        "dci": {"disentanglement": scores.disentanglement,
                "completeness": scores.completeness,
                "informativeness": scores.informativeness},
        "mutual_information": mig.mutual_information.tolist(),
        "importance": scores.importance.tolist(),
        "factor_names": names,
        "settings": {"codes": "guide mean", "points": int(codes.shape[0]), "bins": bins,
                     "estimator": "histogram mutual information (sklearn mutual_info_score)",
                     "dci_regressor": scores.regressor(),
                     "train_fraction": scores.train_fraction, "seed": seed},
    }
