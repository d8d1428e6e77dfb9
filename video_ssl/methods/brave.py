"""BraVe (Recasens et al. 2021, "Broaden Your Views for Self-Supervised Video Learning";
sections, equations and tables refer to it): a narrow clip and broad views of the same
video, each through its own backbone, regress each other (§3.1).

Encoders and views share their names: "narrow" (the primary encoder, RGB) and one
"broad_<modality>" per broad modality ("broad_rgb" — with or without random
convolutions, a view's augmentation setting —, "broad_flow", "broad_audio"), of K
clips each (the view's `num_clips`, Table 3). `brave_views(broad, num_broad_views)`
builds them from `train_input` bindings scoped by each view's name
(`broad_rgb/train_input.num_frames = 64`); unscoped ones apply to every view.

Per broad modality b: a backbone f_b, projector g_b and predictor h_b, and on the
narrow side a projector g_n^b and predictor h_n^b on the one narrow backbone f_n
(eq. 5). The K clips of a broad view share f_b, g_b and h_b (eq. 4): the narrow
target is the mean of their projections, and L_b->n is the mean over their K
predictions. With r(h, z) = ||h/|h| - sg[z/|z|]||^2 (eqs. 2-3), broad modality b
contributes L_b = r(h_n^b(z_n^b), mean_k z_b^k) + mean_k r(h_b(z_b^k), z_n^b), averaged
over the batch, and the loss is (`loss_scale`):

    'mean' (default): mean_b L_b / 4, the mean over the 2 x (number of broad
        modalities) regression terms of ½ r: the official code's scale
        (deepmind/brave brave/models/brave/brave.py:291, :307), at which the paper's
        learning rates and weight decay were tuned;
    'sum': sum_b L_b, eqs. 1 and 5 as printed (4x 'mean' with one broad modality,
        8x with two).

The scale matters under LARS: its trust ratio makes most weights' updates independent
of it, but not weight decay's share of them nor the plain SGD steps of biases and BN
parameters. The trackers `loss_broad_<m>` report each modality's part of the loss
(L_b / 4, or L_b with 'sum').

No EMA networks (§3.1). Heads (§4.1): projector Linear 4096 -> BN -> ReLU -> Linear
128 -> BN, predictor Linear 4096 -> BN -> ReLU -> Linear 128, BN decay 0.9, eps 1e-5,
synchronized across replicas by default. The predictors' variables are named
`*predictor*`, which the recipes' `lr_multipliers` match (x10).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import gin
import keras
import tensorflow as tf

from video_ssl.data import input_spec, modalities
from video_ssl.data.views import ViewSpec
from video_ssl.methods.base import Encoder, Method, training_view
from video_ssl.methods.losses import byol_loss
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head

NARROW = "narrow"
LOSS_SCALES = ("mean", "sum")
BROAD_MODALITIES = modalities.NAMES  # any modality can be a broad view
# §4.1: TSM-50 for every broad visual view, ResNet-50 for log-mel spectrograms.
BROAD_BACKBONES = {"rgb": "tsm_r50", "flow": "tsm_r50", "audio": "audio_resnet50"}


def broad_view(modality: str) -> str:
    return f"broad_{modality}"


@gin.configurable
def brave_views(broad: Sequence[str] = ("rgb",),
                num_broad_views: int | Mapping[str, int] = 1) -> dict[str, ViewSpec]:
    """{"narrow": one RGB clip, "broad_<m>": K clips of modality m for each broad
    modality}, each from its own `<view>/train_input` bindings over the unscoped ones.

    broad: the broad modalities, in order, a non-empty subset of rgb, flow, audio.
    num_broad_views: K, clips per broad view: one int for every modality, or {modality:
    K} (Table 3; default 1).
    """
    broad = tuple(broad)
    if not broad or set(broad) - set(BROAD_MODALITIES) or len(set(broad)) != len(broad):
        raise ValueError(f"brave_views.broad: expected distinct modalities among "
                         f"{BROAD_MODALITIES}, got {broad!r}")
    counts = (dict(num_broad_views) if isinstance(num_broad_views, Mapping)
              else {m: num_broad_views for m in broad})
    if set(counts) - set(broad) or min(int(k) for k in counts.values()) < 1:
        raise ValueError(f"brave_views.num_broad_views: expected K >= 1 for some of {broad}, "
                         f"got {num_broad_views!r}")

    def view(name, modality, num_clips):
        with gin.config_scope(name):
            values = input_spec.train_input()
        return training_view(values, num_clips=num_clips, modalities=(modality,))

    return {NARROW: view(NARROW, "rgb", 1),
            **{broad_view(m): view(broad_view(m), m, int(counts.get(m, 1))) for m in broad}}


def regression(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Eqs. (2)-(3): mean over the batch of ||p/|p| - sg[t/|t|]||^2, in float32 whatever
    the layers compute in."""
    return byol_loss(tf.cast(prediction, tf.float32),
                     tf.stop_gradient(tf.cast(target, tf.float32)))


class BraVe(Method):
    """BraVe; see the module docstring.

    Args:
      views: {"narrow": 1 RGB clip, "broad_<m>": K clips of modality m, ...}
        (`brave_views`); the broad views' order is the broad modalities'.
      narrow_backbone: registry name (or built model) of f_n; RGB input.
      broad_backbones: {modality: registry name or built model} for f_b, defaults
        `BROAD_BACKBONES`.
      backbone_kwargs: extra `build_backbone` arguments for every backbone (e.g.
        `width_multiplier`); narrow_backbone_kwargs: for f_n only, on top;
        broad_backbone_kwargs: {modality: kwargs} for that f_b only, on top (e.g. an
        imported checkpoint's TSM `shift_layout`, which the audio network has not).
      hidden_dim, embedding_dim: the heads' sizes (§4.1: 4096, 128).
      synchronized_bn: SyncBN in the backbones and heads (§4.1, the official code).
      loss_scale: 'mean' (the official code's) or 'sum' (eqs. 1-5 as printed); see the
        module docstring.
    """

    def __init__(self, views: Mapping[str, ViewSpec], narrow_backbone: str | keras.Model = "tsm_r50",
                 *, broad_backbones: Mapping[str, str | keras.Model] | None = None,
                 backbone_kwargs: Mapping | None = None,
                 narrow_backbone_kwargs: Mapping | None = None,
                 broad_backbone_kwargs: Mapping[str, Mapping] | None = None,
                 hidden_dim: int = 4096, embedding_dim: int = 128,
                 synchronized_bn: bool = True, loss_scale: str = "mean", **kwargs):
        if loss_scale not in LOSS_SCALES:
            raise ValueError(f"BraVe.loss_scale: expected one of {LOSS_SCALES}, got "
                             f"{loss_scale!r}")
        broad = _broad_modalities(views)
        super().__init__(views, {NARROW: Encoder("narrow_backbone", NARROW, "rgb"), **{
            broad_view(m): Encoder(f"{broad_view(m)}_backbone", broad_view(m), m)
            for m in broad}}, **{"name": "brave", **kwargs})
        self.broad = broad
        self.num_broad_views = {m: views[broad_view(m)].num_clips for m in broad}
        self.synchronized_bn = bool(synchronized_bn)
        self.loss_scale = loss_scale
        backbones = {**BROAD_BACKBONES, **dict(broad_backbones or {})}
        shared = dict(backbone_kwargs or {})
        broad_kwargs = dict(broad_backbone_kwargs or {})
        if set(broad_kwargs) - set(broad):
            raise ValueError(f"BraVe.broad_backbone_kwargs: expected some of the broad "
                             f"modalities {broad}, got {sorted(broad_kwargs)}")

        def backbone(model, modality, extra=None):
            if not isinstance(model, str):
                return model
            return build_backbone(model, synchronized_bn=self.synchronized_bn,
                                  input_channels=modalities.channels(modality),
                                  **{**shared, **(extra or {})})

        def head(input_dim, name, projector):
            return mlp_head(input_dim, hidden_dim=hidden_dim, output_dim=embedding_dim,
                            num_layers=2, batch_norm=True, output_batch_norm=projector,
                            synchronized_bn=self.synchronized_bn, name=name)

        self.narrow_backbone = backbone(narrow_backbone, "rgb", narrow_backbone_kwargs)
        narrow_dim = int(self.narrow_backbone.output_shape[-1])
        for m in broad:
            name = broad_view(m)
            setattr(self, f"{name}_backbone", backbone(backbones[m], m, broad_kwargs.get(m)))
            broad_dim = int(getattr(self, f"{name}_backbone").output_shape[-1])
            setattr(self, f"{name}_projector", head(broad_dim, f"{name}_projector", True))
            setattr(self, f"{name}_predictor", head(embedding_dim, f"{name}_predictor", False))
            setattr(self, f"narrow_{m}_projector", head(narrow_dim, f"narrow_{m}_projector", True))
            setattr(self, f"narrow_{m}_predictor",
                    head(embedding_dim, f"narrow_{m}_predictor", False))
        self.term_trackers = {m: keras.metrics.Mean(name=f"loss_{broad_view(m)}") for m in broad}
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    def call(self, clips, training=False):
        """Narrow features (B, D) of RGB clips (B, T, H, W, 3)."""
        return self.narrow_backbone(clips, training=training)

    # ----------------------------------------------------------------- the step
    def losses_per_modality(self, data, training: bool = True) -> dict[str, tf.Tensor]:
        """{broad modality b: its part of the loss} of one batch: L_b = L_n->b + L_b->n
        (eqs. 2-5), a quarter of it (the mean of its two terms, each ½ r) with
        loss_scale 'mean'."""
        narrow = self.narrow_backbone(self.view_clips(data, NARROW, "rgb")[:, 0],
                                      training=training)
        terms = {}
        for m in self.broad:
            name = broad_view(m)
            clips = self.view_clips(data, name, m)
            batch, k = tf.shape(clips)[0], clips.shape[1]
            flat = tf.reshape(clips, tf.concat([[-1], tf.shape(clips)[2:]], axis=0))
            projection = getattr(self, f"{name}_projector")(
                getattr(self, f"{name}_backbone")(flat, training=training), training=training)
            prediction = getattr(self, f"{name}_predictor")(projection, training=training)
            z_n = getattr(self, f"narrow_{m}_projector")(narrow, training=training)
            h_n = getattr(self, f"narrow_{m}_predictor")(z_n, training=training)
            z_b = tf.reduce_mean(tf.reshape(tf.cast(projection, tf.float32), [batch, k, -1]),
                                 axis=1)
            h_b = tf.reshape(prediction, [batch, k, -1])
            narrow_to_broad = regression(h_n, z_b)
            broad_to_narrow = tf.add_n([regression(h_b[:, i], z_n) for i in range(k)]) / k
            terms[m] = narrow_to_broad + broad_to_narrow
            if self.loss_scale == "mean":
                terms[m] = terms[m] / 4.0
        return terms

    def total_loss(self, terms: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The loss from `losses_per_modality`'s parts: their mean with loss_scale
        'mean', their sum with 'sum'."""
        total = tf.add_n(list(terms.values()))
        return total / len(terms) if self.loss_scale == "mean" else total

    def train_step(self, data):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.losses_per_modality(data)
            loss = self.total_loss(terms)
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_and_track(loss, tape.gradient(scaled_loss, variables), variables)
        for m, term in terms.items():
            self.term_trackers[m].update_state(term)
        return {tracker.name: tracker.result() for tracker in self.metrics}


def _broad_modalities(views) -> tuple[str, ...]:
    """The broad modalities of BraVe's views, checked: "narrow" is one RGB clip, each
    "broad_<m>" has modality m alone."""
    narrow = views.get(NARROW) if isinstance(views, Mapping) else None
    broad = tuple(name[len("broad_"):] for name in views or () if name != NARROW)
    good = (narrow is not None and narrow.modalities == ("rgb",) and narrow.num_clips == 1
            and broad and all(m in BROAD_MODALITIES and views[broad_view(m)].modalities == (m,)
                              for m in broad))
    if not good:
        raise ValueError(f"BraVe.views: expected {{'narrow': 1 RGB clip, 'broad_<m>': clips of "
                         f"modality m}} for m in {BROAD_MODALITIES} (brave_views), got "
                         f"{ {n: (v.modalities, v.num_clips) for n, v in (views or {}).items()} }")
    return broad
