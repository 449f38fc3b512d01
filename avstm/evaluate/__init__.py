"""avstm.evaluate: ground truth, metrics, baselines, reports, and ``evaluate`` / the ablation
table of ``avstm evaluate`` (docs/annotations.md)."""

from avstm.evaluate.annotations import (AnnotationWarning, Box, GroundTruth, VideoTruth,
                                        frame_label, read_ground_truth, to_avstm_json)
from avstm.evaluate.baselines import BASELINES, baseline_prediction, evaluate_baseline
from avstm.evaluate.metrics import (Binarization, FrameResult, MetricsConfig, evaluate_frame,
                                    parse_binarization)
from avstm.evaluate.report import (Report, aggregate, format_method_table, format_report,
                                   summarize, write_report)
from avstm.evaluate.inputs import (MapsFile, find_groups, maps_key, match_time, read_groups,
                                   run_model, write_maps)
from avstm.evaluate.run import (AblationResult, EvaluateConfig, EvaluationResult, evaluate,
                                evaluate_ablation)
from avstm.evaluate.protocols import PROTOCOLS, Protocol, get_protocol
from avstm.evaluate.extended import ExtendedConfig, ExtendedResult, evaluate_extended

__all__ = [
    "AblationResult", "AnnotationWarning", "BASELINES", "Binarization", "Box", "EvaluateConfig",
    "EvaluationResult", "ExtendedConfig", "ExtendedResult", "FrameResult", "GroundTruth",
    "MapsFile", "MetricsConfig", "PROTOCOLS", "Protocol", "Report", "VideoTruth", "aggregate",
    "baseline_prediction", "evaluate", "evaluate_ablation", "evaluate_baseline",
    "evaluate_extended", "evaluate_frame", "find_groups", "format_method_table",
    "format_report", "frame_label", "get_protocol", "maps_key", "match_time",
    "parse_binarization", "read_groups", "read_ground_truth", "run_model", "summarize",
    "to_avstm_json", "write_maps", "write_report",
]
