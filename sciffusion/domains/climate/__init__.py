"""Climate and weather fields: netCDF/zarr ingestion, ensemble forecasts, scores and baselines."""

from ...tasks.outputs import write_netcdf
from .downscale import Downscale, downscale
from .fields import Grid, canonical, open_fields
from .forecast import Forecast, forecast
from .scores import crps_ensemble, ensemble_scores, rank_histogram, skill_spread, weighted_mean

__all__ = ["Grid", "canonical", "open_fields", "write_netcdf", "Forecast", "forecast", "Downscale", "downscale",
           "crps_ensemble",
           "ensemble_scores", "rank_histogram", "skill_spread", "weighted_mean"]
