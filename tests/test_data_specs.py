"""The typed data specs (`AugmentSpec`, `ViewSpec` from flat options and from JSON) and
the modality table that schema, views, the pipeline and serving read."""
import dataclasses
import json

import pytest

from video_ssl import serving
from video_ssl.data import input_spec, modalities, pipeline, schema
from video_ssl.data.views import AudioSpec, AugmentSpec, ViewSpec


@pytest.mark.parametrize("field, value, expected", [
    ("flip_prob", 1.5, r"AugmentSpec.flip_prob=1.5: expected a probability in \[0, 1\]"),
    ("blur_prob", True, r"AugmentSpec.blur_prob=True: expected a probability"),
    ("color_strength", -1, r"AugmentSpec.color_strength=-1: expected a number >= 0"),
    ("normalize", 1, r"AugmentSpec.normalize=1: expected True or False"),
    ("blur_kernel_size", 4, r"AugmentSpec.blur_kernel_size=4: expected None or an odd int"),
    ("mean", (0.4, 0.5), r"AugmentSpec.mean=\(0.4, 0.5\): expected a number or one per RGB"),
    ("std", 0.0, r"AugmentSpec.std=0.0: expected .*all > 0"),
    ("photometric_prob", 2.0, r"AugmentSpec.photometric_prob=2.0: expected a probability"),
    ("color_jitter_style", "torch",
     r"AugmentSpec.color_jitter_style='torch': expected one of \('simclr', 'brave'\)"),
    ("grayscale_mode", "mean", r"AugmentSpec.grayscale_mode='mean': expected one of"),
    ("blur_padding", "ZERO", r"AugmentSpec.blur_padding='ZERO': expected one of"),
    ("blur_kernel_size", "fifth", r"blur_kernel_size='fifth': expected None or an odd int "
                                  r">= 1, or 'tenth'"),
    ("flow_photometric", 1, r"AugmentSpec.flow_photometric=1: expected True or False"),
])
def test_augment_spec_names_the_bad_field(field, value, expected):
    with pytest.raises(ValueError, match=expected) as error:
        AugmentSpec(**{field: value})
    assert "\n" not in str(error.value)


def test_official_code_options_are_checked_together():
    with pytest.raises(ValueError, match=r"color_jitter_exact=True: the exact path is the "
                                         r"'simclr' style's"):
        AugmentSpec(color_jitter_exact=True, color_jitter_style="brave")
    with pytest.raises(ValueError, match=r"ViewSpec.one_clip_prob=1.5: expected a probability"):
        ViewSpec(num_clips=2, one_clip_prob=1.5)
    view = input_spec.view_from_input({"one_clip_prob": 0.5, "photometric_prob": 0.3,
                                       "blur_kernel_size": "tenth"}, num_clips=2)
    assert view.one_clip_prob == 0.5 and view.augmentation == AugmentSpec(
        photometric_prob=0.3, blur_kernel_size="tenth")
    assert input_spec.view_from_json(json.loads(json.dumps(input_spec.view_to_json(view)))) \
        == view


def test_augment_spec_takes_lists_as_tuples():
    spec = AugmentSpec(mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    assert spec.mean == (0.4, 0.5, 0.6) and hash(spec) == hash(dataclasses.replace(spec))
    with pytest.raises(ValueError, match=r"ViewSpec.augmentation=\{'flip_prob': 0.0\}: "
                                         "expected an AugmentSpec"):
        ViewSpec(augmentation={"flip_prob": 0.0})


def test_view_from_json_reads_the_partial_augmentation_of_older_runs():
    """Runs written before AugmentSpec stored the bound keys alone."""
    old = {"num_frames": 4, "area_range": [0.3, 1.0],
           "augmentation": {"color_strength": 0.25, "mean": [0.4, 0.5, 0.6]},
           "audio": {"duration": 5.0}}
    view = input_spec.view_from_json(old)
    assert view == ViewSpec(num_frames=4, area_range=(0.3, 1.0), audio=AudioSpec(duration=5.0),
                            augmentation=AugmentSpec(color_strength=0.25, mean=(0.4, 0.5, 0.6)))
    written = json.loads(json.dumps(input_spec.view_to_json(view)))
    assert written["augmentation"]["flip_prob"] == 0.5  # now written whole
    assert input_spec.view_from_json(written) == view
    with pytest.raises(ValueError, match=r"augmentation .*: unknown keys \['colour'\]; "
                                         r"expected some of .* \(AugmentSpec\)"):
        input_spec.view_from_json({"augmentation": {"colour": 1}})


def test_clip_settings_read_the_normalization_of_the_spec():
    _, normalization = input_spec.clip_settings(ViewSpec(augmentation=AugmentSpec(std=0.25)))
    assert normalization == {"mean": 0.45, "std": 0.25}
    _, off = input_spec.clip_settings(ViewSpec(augmentation=AugmentSpec(normalize=False)))
    assert off == {"mean": 0.0, "std": 1.0}


def test_make_dataset_rejects_an_unknown_keyword_in_one_line():
    with pytest.raises(ValueError, match=r"^make_dataset: unknown keyword colour_strength; "
                                         "expected ViewSpec fields") as error:
        pipeline.make_dataset("unused-*", training=True, batch_size=1, colour_strength=0.5)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="augmentation given whole and as keywords"):
        pipeline.make_dataset("unused-*", training=True, batch_size=1,
                              augmentation=AugmentSpec(), flip_prob=0.0)


def test_gin_keys_are_the_spec_fields():
    assert input_spec.AUGMENT_KEYS == tuple(f.name for f in dataclasses.fields(AugmentSpec))
    view = input_spec.view_from_input({"crop_size": 32, "color_strength": 0.75,
                                       "area_range": [0.3, 1.0], "shuffle_buffer": 4},
                                      num_clips=2, modalities=("rgb",))
    assert view == ViewSpec(num_clips=2, crop_size=32, area_range=(0.3, 1.0),
                            augmentation=AugmentSpec(color_strength=0.75))


def test_the_modality_table_is_the_one_list():
    assert modalities.NAMES == ("rgb", "flow", "audio")
    assert [modalities.channels(m) for m in modalities.NAMES] == [3, 2, 1]
    assert [modalities.MODALITIES[m].input_rank for m in modalities.NAMES] == [5, 5, 4]
    assert modalities.MODALITIES["flow"].augmentations == ("crop", "flip")
    assert modalities.MODALITIES["audio"].augmentations == ()
    assert (schema.FRAMES, schema.FLOW, schema.WAVEFORM) == tuple(
        modalities.MODALITIES[m].feature_list for m in ("rgb", "flow", "audio"))
    # No module keeps a copy of its own.
    assert not hasattr(schema, "MODALITIES") and not hasattr(serving, "MODALITIES")
    listed = str(modalities.NAMES).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=f"modality 'depth': expected one of {listed}"):
        modalities.get("depth")
    with pytest.raises(ValueError, match=f"expected a non-empty subset of {listed}"):
        ViewSpec(modalities=("depth",))
    with pytest.raises(ValueError, match=f"expected a subset of {listed}"):
        schema.parse_sequence_example(b"", ("depth",))
    with pytest.raises(serving.ExportError, match=f"expected one of {listed}"):
        serving.build_archive(None, serving.eval_view(), modality="depth")
