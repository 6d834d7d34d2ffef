"""Climate and weather fields: netCDF/zarr ingestion, ensemble forecasts, scores and baselines."""

from ...tasks.outputs import write_netcdf
from .downscale import downscale
from .fields import Grid, canonical, open_fields
from .forecast import forecast
from .scores import crps_ensemble, ensemble_scores, rank_histogram, skill_spread, weighted_mean
from .tasks import Downscale, Forecast, train_downscale, train_forecast

__all__ = ["train_forecast", "train_downscale", "Grid", "canonical", "open_fields", "write_netcdf", "Forecast",
           "forecast", "Downscale", "downscale", "crps_ensemble", "ensemble_scores", "rank_histogram", "skill_spread",
           "weighted_mean"]
