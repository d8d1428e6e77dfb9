"""The ρ family (Feichtenhofer et al. 2021): ρ temporally distant clips of one video
are positives of each other.

One view, "clips", of `num_clips` clips of one modality feeds the one encoder, named
after its modality ("rgb", or "flow" for a flow network). ρ is read from the view:
ρ = num_clips, except that ρ = 1, the paper's baseline of two spatial augmentations of
one clip, is two clips of one shared window (`same_window`), for which the method
computes exactly what it computes for ρ = 2. `rho_views(rho, modality)` builds that view
from the `train_input` bindings (gin: `MoCo.views = @rho_views()`, `rho_views.rho = 3`).
"""
from __future__ import annotations

from typing import Mapping

import gin
import keras
import tensorflow as tf

from video_ssl.data import modalities
from video_ssl.data.views import ViewSpec
from video_ssl.methods import steps
from video_ssl.methods.base import Encoder, Method, training_view
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head

VIEW = "clips"
MODALITIES = ("rgb", "flow")


@gin.configurable
def rho_views(rho: int = 2, modality: str = "rgb") -> dict[str, ViewSpec]:
    """{"clips": ρ clips of `modality` per video (ρ = 1: two clips of one window)}, clip
    shape, crops and augmentation from the `train_input` bindings."""
    if not isinstance(rho, int) or rho < 1:
        raise ValueError(f"rho_views.rho: expected an integer >= 1, got {rho!r}")
    steps.check_choice("rho_views", "modality", modality, MODALITIES)
    return {VIEW: training_view(num_clips=max(rho, 2), same_window=rho == 1,
                                modalities=(modality,))}


class RhoMethod(Method):
    """Family base: the online `backbone` on the "clips" view, BatchNorm groups and the
    view's clips.

    Args:
      views: {"clips": ViewSpec} of at least 2 clips of one modality, "rgb" or "flow"
        (`rho_views`).
      backbone: a registry name for `build_backbone` or a built `keras.Model` from
        (B, T, H, W, C) to (B, D).
      backbone_kwargs: extra `build_backbone` arguments (e.g. `width_multiplier`).
      synchronized_bn: SyncBN in the backbone (when built here) and in the heads.
      bn_group_size: clips per BatchNorm group inside a replica (B.1: statistics over
        8 clips for MoCo, one GPU's batch); None = the whole per-replica batch. The
        online encoder and heads run once per group, so each group's statistics
        normalize it and update the running averages in turn.
    """

    def __init__(self, views: Mapping[str, ViewSpec], backbone: str | keras.Model = "slow_r50",
                 *, backbone_kwargs: dict | None = None, synchronized_bn: bool = False,
                 bn_group_size: int | None = None, **kwargs):
        owner = type(self).__name__
        view = views.get(VIEW) if isinstance(views, Mapping) else None
        if set(views or ()) != {VIEW} or len(view.modalities) != 1 \
                or view.modalities[0] not in MODALITIES or view.num_clips < 2:
            raise ValueError(f"{owner}.views: expected {{'clips': ViewSpec}} of >= 2 clips of "
                             f"one modality in {MODALITIES} (rho_views), got {views!r}")
        if bn_group_size is not None and int(bn_group_size) < 1:
            raise ValueError(f"{owner}.bn_group_size: expected None or >= 1, got "
                             f"{bn_group_size!r}")
        modality = view.modalities[0]
        super().__init__(views, {modality: Encoder("backbone", VIEW, modality)}, **kwargs)
        self.modality = modality
        self.num_clips = view.num_clips
        self.rho = 1 if view.same_window else view.num_clips
        self.synchronized_bn = synchronized_bn
        self.bn_group_size = bn_group_size
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, synchronized_bn=synchronized_bn,
                                      input_channels=modalities.channels(modality),
                                      **(backbone_kwargs or {}))
        self.backbone = backbone
        self.feature_dim = int(backbone.output_shape[-1])
        # All layers are built eagerly (the heads from their input size), so Keras
        # need not trace `call` with a training batch to build the model.
        self.built = True

    def mlp(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
            batch_norm: bool, name: str) -> keras.Sequential:
        return mlp_head(input_dim, hidden_dim=hidden_dim, output_dim=output_dim,
                        num_layers=num_layers, batch_norm=batch_norm,
                        synchronized_bn=self.synchronized_bn, name=name)

    def call(self, clips, training=False):
        """Backbone features (B, D) of clips (B, T, H, W, C)."""
        return self.backbone(clips, training=training)

    def grouped(self, fn, clips: tf.Tensor) -> tf.Tensor:
        """`fn(clips)` once per `bn_group_size` clips, in float32 (`steps.grouped`)."""
        return steps.grouped(fn, clips, self.bn_group_size, type(self).__name__)

    def split_clips(self, data) -> list[tf.Tensor]:
        """The batch's `num_clips` clip-batches, each (B, T, H, W, C)."""
        clips = self.view_clips(data, VIEW, self.modality)
        if clips.shape.rank != 6:
            raise ValueError(f"batch['views'][{VIEW!r}][{self.modality!r}]: expected shape "
                             f"(batch, {self.num_clips} clips, T, H, W, C) for rho="
                             f"{self.rho}, got {tuple(clips.shape)}")
        return tf.unstack(clips, axis=1)
