"""How far a stop-position estimate can be trusted: the uncertainty behind leveling_drift.

The accelerometer gives the car's stop position relative to the landing sill as: the
position at the last leveling-zone edge the car passed on the way in (the landing's sill
plus that edge's learned offset), plus the distance integrated from that edge to the rest.
Its error has four independent parts, each computed from what the terminal measures:

- **edge reference**: the learned edge offset is the median of the departures' own
  measurements; its standard error is the robust spread of those over √n;
- **edge timing**: the input's time stamp resolves the edge to ``EDGE_TIME_RES_S`` (a
  uniform error, /√12), times the speed at the edge;
- **integration from the edge to the rest** (``T`` seconds): white acceleration noise
  of two-sided density ``S`` (m²/s³) integrated twice gives a variance ``S·T³/3``;
- **speed at the edge**: integrated from the departure (``T_a`` seconds earlier, at
  rest, speed exactly zero) it has a variance ``S·T_a``; over ``T`` it becomes a
  position variance ``S·T_a·T²``. The tracker takes the speed left at the rest back
  out of the position, which removes part of this: keeping all of it makes the figure an
  upper bound (measured on the simulator: the real spread is 0.5–0.9 of it).

``S`` comes from the sensor's own rest noise: the variance of the 10 Hz low-passed
vertical signal at rest over twice the filter's noise bandwidth (a 4th-order Butterworth
at 10 Hz: 10.26 Hz). It includes the quantisation noise, so a coarser sensor (256
counts/g) gets a larger figure than a finer one (1024 counts/g) with the same noise.

The result is an *expanded* uncertainty ``U = K·σ`` (K = 2, about 95 %), in millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median

from liftwatch.signal.baselines import MAD_SCALE

#: resolution of an input edge's time stamp (GPIO sampled every 10 ms or better)
EDGE_TIME_RES_S = 0.01
#: noise-equivalent bandwidth of the 10 Hz 4th-order Butterworth low-pass (Hz)
ENBW_HZ = 10.0 * math.pi / (8 * math.sin(math.pi / 8))
#: coverage factor of the expanded uncertainty
K = 2.0


def noise_density(rest_var_ms2: float) -> float:
    """Two-sided white-noise density (m²/s³) from the variance of the low-passed
    vertical acceleration at rest (m²/s⁴)."""
    return max(0.0, rest_var_ms2) / (2.0 * ENBW_HZ)


def stop_uncertainty_mm(density: float, t_edge_to_rest: float, t_depart_to_edge: float,
                        edge_obs: Sequence[float], speed_at_edge: float) -> float:
    """Expanded uncertainty (mm) of a stop position fixed at a leveling edge (see module)."""
    t = max(0.0, t_edge_to_rest)
    ta = max(0.0, t_depart_to_edge)
    var = density * (t ** 3 / 3.0 + ta * t * t)
    n = len(edge_obs)
    if n >= 2:
        med = median(edge_obs)
        mad = MAD_SCALE * median(abs(x - med) for x in edge_obs)
        var += (mad * mad) / n
    var += (abs(speed_at_edge) * EDGE_TIME_RES_S) ** 2 / 12.0
    return K * math.sqrt(var) * 1000.0
