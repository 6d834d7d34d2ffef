"""Financial and other daily series: GARCH-aware scenario generation, risk backtests and stylized facts."""

from .garch import GarchT
from .report import format_report, risk_report
from .risk import (acf, aggregated_kurtosis, backtest, christoffersen, es_z2, hill, kupiec, leverage, pinball,
                   stylized_facts, var_es)
from .scenarios import Scenarios, scenarios, simulate
from .series import log_returns, read_table, to_frame

__all__ = ["GarchT", "format_report", "risk_report", "acf", "aggregated_kurtosis", "backtest", "christoffersen",
           "es_z2", "hill", "kupiec", "leverage", "pinball", "stylized_facts", "var_es", "Scenarios", "scenarios",
           "simulate", "log_returns", "read_table", "to_frame"]
