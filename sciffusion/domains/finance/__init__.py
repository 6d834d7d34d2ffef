"""Financial and other daily series: GARCH-aware scenario generation, imputation, risk backtests and stylized
facts."""

from ...metrics import diebold_mariano
from .anomaly import day_scores, detection_table, inject_anomalies
from .garch import GarchT
from .impute import impute, impute_baseline
from .impute_scores import hide_stretches, imputation_report, imputation_scores
from .report import format_report, risk_report
from .risk import (
    acf,
    aggregated_kurtosis,
    backtest,
    christoffersen,
    es_z2,
    hill,
    kupiec,
    leverage,
    pinball,
    stylized_facts,
    var_es,
)
from .scenarios import scenarios, simulate
from .series import log_returns, read_table, to_frame
from .tasks import DayScores, Impute, Scenarios, WindowScores, train_impute, train_scenarios
from .windows import inject_window_anomalies, window_scores

__all__ = ["train_scenarios", "train_impute", "GarchT", "format_report", "risk_report", "acf", "aggregated_kurtosis",
           "backtest", "christoffersen", "diebold_mariano", "es_z2", "hill", "kupiec", "leverage", "pinball",
           "stylized_facts", "var_es", "Scenarios", "scenarios", "simulate", "log_returns", "read_table", "to_frame",
           "Impute", "impute", "impute_baseline", "imputation_scores", "imputation_report", "hide_stretches",
           "DayScores", "day_scores", "detection_table", "inject_anomalies", "WindowScores", "window_scores",
           "inject_window_anomalies"]
