"""avstm.evaluate: ground truth, metrics, baselines, reports, and ``evaluate`` / the ablation
table of ``avstm evaluate`` (docs/annotations.md)."""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "AnnotationWarning": "avstm.evaluate.annotations", "Box": "avstm.maps",
    "GroundTruth": "avstm.evaluate.annotations", "VideoTruth": "avstm.evaluate.annotations",
    "frame_label": "avstm.evaluate.annotations", "read_ground_truth":
    "avstm.evaluate.annotations", "to_avstm_json": "avstm.evaluate.annotations",
    "BASELINES": "avstm.evaluate.baselines", "baseline_prediction": "avstm.evaluate.baselines",
    "evaluate_baseline": "avstm.evaluate.baselines",
    "Binarization": "avstm.evaluate.metrics", "FrameResult": "avstm.evaluate.metrics",
    "MetricsConfig": "avstm.evaluate.metrics", "evaluate_frame": "avstm.evaluate.metrics",
    "parse_binarization": "avstm.evaluate.metrics",
    "Report": "avstm.evaluate.report", "aggregate": "avstm.evaluate.report",
    "format_method_table": "avstm.evaluate.report", "format_report": "avstm.evaluate.report",
    "summarize": "avstm.evaluate.report", "write_report": "avstm.evaluate.report",
    "MapsFile": "avstm.maps", "maps_key": "avstm.maps", "write_maps": "avstm.maps",
    "find_groups": "avstm.evaluate.inputs", "match_time": "avstm.evaluate.inputs",
    "read_groups": "avstm.evaluate.inputs", "run_model": "avstm.evaluate.inputs",
    "AblationResult": "avstm.evaluate.run", "EvaluateConfig": "avstm.evaluate.config",
    "EvaluationResult": "avstm.evaluate.run", "evaluate": "avstm.evaluate.run",
    "evaluate_ablation": "avstm.evaluate.run",
    "PROTOCOLS": "avstm.evaluate.protocols", "Protocol": "avstm.evaluate.protocols",
    "get_protocol": "avstm.evaluate.protocols",
    "ExtendedConfig": "avstm.evaluate.extended", "ExtendedResult": "avstm.evaluate.extended",
    "evaluate_extended": "avstm.evaluate.extended",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
