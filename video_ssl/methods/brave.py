"""BraVe (Recasens et al. 2021, "Broaden Your Views for Self-Supervised Video Learning";
sections, equations and tables refer to it): a narrow clip and broad views of the same
video, each through its own backbone, regress each other (§3.1).

Encoders and views share their names: "narrow" (the primary encoder, RGB) and one
"broad_<modality>" per broad modality ("broad_rgb" — with or without random
convolutions, a view's augmentation setting —, "broad_flow", "broad_audio"). Each view
is configured by `train_input` bindings scoped by its name
(`broad_rgb/train_input.num_frames = 64`); unscoped ones apply to every view.

Per broad modality b: a backbone f_b, projector g_b and predictor h_b, and on the
narrow side a projector g_n^b and predictor h_n^b on the one narrow backbone f_n
(eq. 5). The K clips of a broad view share f_b, g_b and h_b (eq. 4): the narrow
target is the mean of their projections, and L_b->n is the mean over their K
predictions. With r(h, z) = ||h/|h| - sg[z/|z|]||^2 (eqs. 2-3):

    L = sum_b  r(h_n^b(z_n^b), mean_k z_b^k) + mean_k r(h_b(z_b^k), z_n^b),

averaged over the batch. No EMA networks (§3.1). Heads (§4.1): projector Linear 4096
-> BN -> ReLU -> Linear 128 -> BN, predictor Linear 4096 -> BN -> ReLU -> Linear 128,
BN decay 0.9, eps 1e-5, synchronized across replicas by default. The predictors'
variables are named `*predictor*`, which the recipes' `lr_multipliers` match (x10).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import gin
import keras
import tensorflow as tf

from video_ssl.data import input_spec
from video_ssl.methods.losses import byol_loss
from video_ssl.methods.base import EncoderInput, Method, configurable, training_view
from video_ssl.methods.rho import MODALITY_CHANNELS
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head

NARROW = "narrow"
CHANNELS = {**MODALITY_CHANNELS, "audio": 1}
BROAD_MODALITIES = tuple(CHANNELS)
# §4.1: TSM-50 for every broad visual view, ResNet-50 for log-mel spectrograms.
BROAD_BACKBONES = {"rgb": "tsm_r50", "flow": "tsm_r50", "audio": "audio_resnet50"}


def broad_view(modality: str) -> str:
    return f"broad_{modality}"


def regression(prediction: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Eqs. (2)-(3): mean over the batch of ||p/|p| - sg[t/|t|]||^2, in float32 whatever
    the layers compute in."""
    return byol_loss(tf.cast(prediction, tf.float32),
                     tf.stop_gradient(tf.cast(target, tf.float32)))


@configurable
class BraVe(Method):
    """BraVe; see the module docstring.

    Args:
      narrow_backbone: registry name (or built model) of f_n; RGB input.
      broad: the broad modalities, in order, a non-empty subset of rgb, flow, audio.
      num_broad_views: K, clips per broad view: one int for every modality, or
        {modality: K} (Table 3; default 1).
      broad_backbones: {modality: registry name} for f_b, defaults `BROAD_BACKBONES`.
      backbone_kwargs: extra `build_backbone` arguments for every backbone (e.g.
        `width_multiplier`); narrow_backbone_kwargs: for f_n only, on top.
      hidden_dim, embedding_dim: the heads' sizes (§4.1: 4096, 128).
      synchronized_bn: SyncBN in the backbones and heads (§4.1, the official code).
    """

    def __init__(self, narrow_backbone: str | keras.Model = "tsm_r50", *,
                 broad: Sequence[str] = ("rgb",),
                 num_broad_views: int | Mapping[str, int] = 1,
                 broad_backbones: Mapping[str, str] | None = None,
                 backbone_kwargs: Mapping | None = None,
                 narrow_backbone_kwargs: Mapping | None = None,
                 hidden_dim: int = 4096, embedding_dim: int = 128,
                 synchronized_bn: bool = True, **kwargs):
        super().__init__(**{"name": "brave", **kwargs})
        self.broad = tuple(broad)
        if not self.broad or set(self.broad) - set(BROAD_MODALITIES) \
                or len(set(self.broad)) != len(self.broad):
            raise ValueError(f"BraVe.broad: expected distinct modalities among "
                             f"{BROAD_MODALITIES}, got {broad!r}")
        counts = (dict(num_broad_views) if isinstance(num_broad_views, Mapping)
                  else {m: num_broad_views for m in self.broad})
        unknown = set(counts) - set(self.broad)
        if unknown:
            raise ValueError(f"BraVe.num_broad_views: {sorted(unknown)} are not broad "
                             f"modalities {self.broad}")
        self.num_broad_views = {m: int(counts.get(m, 1)) for m in self.broad}
        if min(self.num_broad_views.values()) < 1:
            raise ValueError(f"BraVe.num_broad_views: expected >= 1, got {num_broad_views!r}")
        names = {**BROAD_BACKBONES, **dict(broad_backbones or {})}
        self.synchronized_bn = bool(synchronized_bn)
        shared = dict(backbone_kwargs or {})

        def backbone(model, modality, extra=None):
            if not isinstance(model, str):
                return model
            return build_backbone(model, synchronized_bn=self.synchronized_bn,
                                  input_channels=CHANNELS[modality], **{**shared, **(extra or {})})

        def head(input_dim, name, projector):
            return mlp_head(input_dim, hidden_dim=hidden_dim, output_dim=embedding_dim,
                            num_layers=2, batch_norm=True, output_batch_norm=projector,
                            synchronized_bn=self.synchronized_bn, name=name)

        self.narrow_backbone = backbone(narrow_backbone, "rgb", narrow_backbone_kwargs)
        narrow_dim = int(self.narrow_backbone.output_shape[-1])
        self._views = {NARROW: self._training_view(NARROW, "rgb", 1)}
        for m in self.broad:
            name = broad_view(m)
            setattr(self, f"{name}_backbone", backbone(names[m], m))
            broad_dim = int(getattr(self, f"{name}_backbone").output_shape[-1])
            setattr(self, f"{name}_projector", head(broad_dim, f"{name}_projector", True))
            setattr(self, f"{name}_predictor", head(embedding_dim, f"{name}_predictor", False))
            setattr(self, f"narrow_{m}_projector", head(narrow_dim, f"narrow_{m}_projector", True))
            setattr(self, f"narrow_{m}_predictor",
                    head(embedding_dim, f"narrow_{m}_predictor", False))
            self._views[name] = self._training_view(name, m, self.num_broad_views[m])
        self.term_trackers = {m: keras.metrics.Mean(name=f"loss_{broad_view(m)}")
                              for m in self.broad}
        self.built = True

    @staticmethod
    def _training_view(name: str, modality: str, num_clips: int):
        # The view's own `name/train_input` bindings over the unscoped ones.
        with gin.config_scope(name):
            values = input_spec.train_input()
        return training_view(values, num_clips=num_clips, modalities=(modality,))

    # ----------------------------------------------------------- what others read
    def encoder_attributes(self):
        return {NARROW: "narrow_backbone",
                **{broad_view(m): f"{broad_view(m)}_backbone" for m in self.broad}}

    def encoder_inputs(self):
        return {NARROW: EncoderInput(NARROW, "rgb"),
                **{broad_view(m): EncoderInput(broad_view(m), m) for m in self.broad}}

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    def call(self, clips, training=False):
        """Narrow features (B, D) of RGB clips (B, T, H, W, 3)."""
        return self.narrow_backbone(clips, training=training)

    # ----------------------------------------------------------------- the step
    def view_clips(self, data, view: str, modality: str) -> tf.Tensor:
        """(B, K, ...) clips of one view, checked against its clip count."""
        clips = tf.convert_to_tensor(self.view_inputs(data, view)[modality])
        expected = self._views[view].num_clips
        if clips.shape.rank is None or clips.shape.rank < 3 or clips.shape[1] != expected:
            raise ValueError(f"batch['views'][{view!r}][{modality!r}]: expected shape (batch, "
                             f"{expected} clips, ...), got {tuple(clips.shape)}")
        return clips

    def losses_per_modality(self, data, training: bool = True) -> dict[str, tf.Tensor]:
        """{broad modality: L_n->b + L_b->n} of one batch (eqs. 2-5)."""
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
        return terms

    def train_step(self, data):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.losses_per_modality(data)
            loss = tf.add_n(list(terms.values()))
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_and_track(loss, tape.gradient(scaled_loss, variables), variables)
        for m, term in terms.items():
            self.term_trackers[m].update_state(term)
        return {tracker.name: tracker.result() for tracker in self.metrics}
