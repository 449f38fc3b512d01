"""memnet/config.py: the run's model fields reach the network, old flat records still load."""

import dataclasses

from avstm.memnet.config import MODEL_FIELDS, ModelConfig, TrainConfig


def other_value(field: dataclasses.Field):
    chosen = {"memory": "unimodal", "map": "alpha_hat", "attention_scale": "learned",
              "heads": 2, "dim": 64, "visual_pool": "mean"}
    if field.name in chosen:
        return chosen[field.name]
    return field.default + 1 if isinstance(field.default, int) else field.default / 2 + 0.05


def test_every_model_field_of_a_run_reaches_the_network():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changed = {name: other_value(fields[name]) for name in MODEL_FIELDS}
    model = TrainConfig(**changed, visual_loss=0.5).model_config(visual_channels=7, num_classes=3)
    assert {name: getattr(model, name) for name in MODEL_FIELDS} == changed
    assert (model.visual_channels, model.num_classes, model.visual_head) == (7, 3, True)
    assert not TrainConfig().model_config(visual_channels=7, num_classes=3).visual_head
    # the fields ModelConfig has and a run does not set are the cache's and visual_head
    rest = {f.name for f in dataclasses.fields(ModelConfig)} - set(MODEL_FIELDS)
    assert rest == {"visual_channels", "num_classes", "audio_channels", "visual_head"}


def test_a_flat_record_of_the_first_release_loads_as_it_meant():
    record = {"epochs": 3, "dim": 64, "memory": "none", "heads": 2, "hidden": 32}  # no map, no scale
    config = TrainConfig.from_dict(record)
    assert (config.dim, config.memory, config.heads, config.hidden) == (64, "none", 2, 32)
    assert (config.map, config.attention_scale) == ("alpha_hat", "none")  # LEGACY
    assert TrainConfig.from_dict(config.to_dict()) == config
