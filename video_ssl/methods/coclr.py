"""InfoNCE, UberNCE and CoCLR (Han, Xie, Zisserman 2020, "Self-supervised Co-training
for Video Representation Learning"; sections, equations and Algorithm 1 refer to it).

All are MoCo with one query clip and one key clip per video (Algorithm 1): the online
encoder embeds clip 0 (the query), the momentum encoder clip 1 (its key; the clips are
cut at random times and augmented independently, §4.2), and the loss is the
multi-instance InfoNCE of eq. (2) over [own key, queue] (UberNCE's default: the mean
over its positives, `UberNCE.loss_form`); only the keys are enqueued.
They share their settings, one typed `QueueNCE` (gin: `QueueNCE.<setting>` binds every
method of the family through `<Method>.nce = @QueueNCE()`), and differ in which queue
entries are positives of a query besides its own key:

- `InfoNCE` (eq. 1): none (instance discrimination), for RGB or flow (the view's one
  modality: `pair_views(modality)`).
- `UberNCE` (§3.1): the entries of the query's class (the label oracle; a label column
  in the queue).
- `CoCLR` (§3.2, eqs. 2-5): the entries of the same video, and the top-K entries by
  the similarity, in a frozen encoder of the other stream (the "sampler", run in
  inference mode), of the key clip's other modality to the sampler features in the
  queue (eq. 3); same-video entries are not among the K candidates. The queue holds
  aligned columns: keys of the trained stream, sampler features (L2-normalized),
  video ids and the filled flags. Video ids: the input pipeline's `batch["video_id"]`,
  shared by records of one `video/source_id` (prepare_dataset writes UCF101's group
  `<Class>_g<GG>`, so clips cut from one YouTube video are positives of each other and
  never mined, as the official code's video_source.json: model/pretrain.py:397-406);
  a record without one is its own video, the same id every epoch. A batch without
  "video_id" gets an id unique to each sample, so only the own key is a same-video
  positive.
- `CoCLR(simultaneous=True)`: Table 1's "sim" ablation, both streams trained at once.

Positive masks are built before the current batch is enqueued. Queue slots not yet
written count neither as positives nor as negatives. Deliberate difference: the
official code starts the queue from random unit vectors that act as negatives until
overwritten (the first queue_size / batch steps only; CoCLR's official code takes no
optimizer step in them, `QueueNCE.wait_for_full_queue`).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Mapping

import gin
import keras
import tensorflow as tf

from video_ssl.data import modalities
from video_ssl.data.views import ViewSpec
from video_ssl.distribute import all_gather, num_replicas, replica_id
from video_ssl.methods import steps
from video_ssl.methods.base import Encoder, Method, training_view
from video_ssl.methods.losses import mean_positive_nce, multi_positive_nce
from video_ssl.methods.momentum import SCHEDULES, MomentumEncoder
from video_ssl.methods.queue import FeatureQueue
from video_ssl.models import build_backbone
from video_ssl.models.heads import mlp_head

VIEW = "clips"
STREAMS = ("rgb", "flow")
# The trained stream's head and the sampler's, by the attribute of their backbone.
HEADS = {"backbone": "projector", "sampler": "sampler_projector"}
NEG_INF = -float("inf")


@gin.configurable
def pair_views(modality: str = "rgb") -> dict[str, ViewSpec]:
    """{"clips": two clips of `modality` per video, cut at independent times} (InfoNCE,
    UberNCE), shape, crops and augmentation from the `train_input` bindings."""
    steps.check_choice("pair_views", "modality", modality, STREAMS)
    return {VIEW: training_view(num_clips=2, same_window=False, modalities=(modality,))}


@gin.configurable
def cotraining_views() -> dict[str, ViewSpec]:
    """{"clips": two clips per video, each in RGB and flow of the same window, crop and
    flip} (CoCLR: the sampler reads the key clip's other modality)."""
    return {VIEW: training_view(num_clips=2, same_window=False, modalities=STREAMS)}


@dataclasses.dataclass(frozen=True)
class QueueNCE:
    """The settings every method of the family shares, defaults the paper's (§A.1-A.3):
    S3D, projection head FC-1024 -> ReLU -> FC-128 without BN, queue 2048, τ 0.07, a
    fixed momentum 0.999; BatchNorm per replica batch or per `bn_group_size` clips;
    `shuffle_bn`: the key encoder's BatchNorm on a shuffled batch, across replicas or,
    on one replica of at least two groups, across its groups (`steps.shuffled_bn`);
    `wait_for_full_queue`: no optimizer step until the queue has been filled once (the
    official CoCLR code, main_coclr.py; its InfoNCE and UberNCE, main_nce.py, step at
    once)."""
    backbone: str | keras.Model = "s3d"
    backbone_kwargs: Mapping = dataclasses.field(default_factory=dict)
    synchronized_bn: bool = False
    bn_group_size: int | None = None
    hidden_dim: int = 1024
    embedding_dim: int = 128
    num_layers: int = 2
    batch_norm_in_head: bool = False
    queue_size: int = 2048
    temperature: float = 0.07
    base_momentum: float = 0.999
    momentum_schedule: str = "constant"
    shuffle_bn: bool = True
    wait_for_full_queue: bool = False

    def __post_init__(self):
        steps.check_choice("QueueNCE", "momentum_schedule", self.momentum_schedule, SCHEDULES)
        if self.bn_group_size is not None and self.bn_group_size < 1:
            raise ValueError(f"QueueNCE.bn_group_size: expected None or >= 1, got "
                             f"{self.bn_group_size!r}")

    def build_backbone(self, modality: str, model: str | keras.Model | None = None):
        """A backbone for a stream of `modality` (this family's, or `model`)."""
        model = self.backbone if model is None else model
        if not isinstance(model, str):
            return model
        return build_backbone(model, synchronized_bn=self.synchronized_bn,
                              input_channels=modalities.channels(modality),
                              **dict(self.backbone_kwargs))


gin.external_configurable(QueueNCE, "QueueNCE")


class QueueNCEMethod(Method):
    """Family base: one query and one key clip per video against an aligned queue;
    the methods say which queue entries are positives (`queue_positives`) and what else
    a queue row holds (`extra_queue_columns` + `batch_entries`).

    Args:
      views: {"clips": two clips per video} (`pair_views` or `cotraining_views`).
      nce: the family's settings (`QueueNCE`).
      modality: the trained stream, "rgb" or "flow"; None = the view's one modality.
    """

    def __init__(self, views: Mapping[str, ViewSpec], nce: QueueNCE = QueueNCE(), *,
                 modality: str | None = None, **kwargs):
        owner = type(self).__name__
        view = views.get(VIEW) if isinstance(views, Mapping) else None
        if set(views or ()) != {VIEW} or view.num_clips != 2 \
                or set(view.modalities) - set(STREAMS):
            raise ValueError(f"{owner}.views: expected {{'clips': ViewSpec}} of 2 clips of "
                             f"{STREAMS} (pair_views, cotraining_views), got {views!r}")
        if modality is None:
            if len(view.modalities) != 1:
                raise ValueError(f"{owner}.modality: the view has {view.modalities}; name "
                                 "the trained stream")
            modality = view.modalities[0]
        steps.check_choice(owner, "modality", modality, view.modalities)
        super().__init__(views, self.declare_encoders(modality), **kwargs)
        self.modality = modality
        self.nce = nce
        self.temperature = float(nce.temperature)
        self.bn_group_size = nce.bn_group_size
        self.backbone = nce.build_backbone(modality)
        self.projector = self.head(int(self.backbone.output_shape[-1]), "projector")
        self.momentum = MomentumEncoder(self.online_modules(), owner=owner, name="momentum",
                                        base_momentum=nce.base_momentum,
                                        schedule=nce.momentum_schedule)
        self.queue = FeatureQueue(nce.queue_size, {
            "keys": ((nce.embedding_dim,), "float32", "zeros"),
            **self.extra_queue_columns(nce.embedding_dim)}, name="queue")
        self.built = True

    # ------------------------------------------------------------------ hooks
    def declare_encoders(self, modality: str) -> dict[str, Encoder]:
        return {modality: Encoder("backbone", VIEW, modality)}

    def extra_queue_columns(self, embedding_dim: int) -> dict:
        """Queue columns aligned with the keys, {name: (row shape, dtype, initializer)}."""
        del embedding_dim
        return {}

    def batch_entries(self, data, clips: dict) -> dict:
        """This replica's rows of the extra queue columns, {column: (B, ...)}."""
        del data, clips
        return {}

    @abc.abstractmethod
    def queue_positives(self, entries: dict, batch_size) -> tf.Tensor:
        """(B, queue_size) bool: the queue rows that are positives of each query (rows
        never written are masked out by the caller)."""

    def self_positive(self, queue_positives: tf.Tensor) -> tf.Tensor:
        """(B,) bool: whether a query's own key is a positive."""
        return tf.ones(tf.shape(queue_positives)[:1], tf.bool)

    # ------------------------------------------------------------------ parts
    def head(self, input_dim: int, name: str) -> keras.Sequential:
        nce = self.nce
        return mlp_head(input_dim, hidden_dim=nce.hidden_dim, output_dim=nce.embedding_dim,
                        num_layers=nce.num_layers, batch_norm=nce.batch_norm_in_head,
                        synchronized_bn=nce.synchronized_bn, name=name)

    def online_modules(self) -> dict[str, keras.Model]:
        return {"backbone": self.backbone, "projector": self.projector}

    def momentum_pairs(self) -> list[tuple[MomentumEncoder, dict]]:
        """(momentum encoder, the online modules it follows) of each trained stream."""
        return [(self.momentum, self.online_modules())]

    def after_initialization(self):
        # Algorithm 1: f_k.params = f_q.params once the encoders are initialized.
        for encoder, online in self.momentum_pairs():
            encoder.copy_from(online)

    def call(self, clips, training=False):
        """Backbone features (B, D) of the trained stream's clips (B, T, H, W, C)."""
        return self.backbone(clips, training=training)

    # ------------------------------------------------------------------ the step
    def clip_pairs(self, data) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        """modality -> (clip 0, clip 1), each (B, T, H, W, C)."""
        view = self._views[VIEW]
        return {m: tuple(tf.unstack(self.view_clips(data, VIEW, m), axis=1))
                for m in view.modalities}

    def embed(self, backbone, projector, clip) -> tf.Tensor:
        """The L2-normalized embedding (B, D) of an encoder, per BatchNorm group."""
        return tf.math.l2_normalize(steps.grouped(
            lambda x: projector(backbone(x, training=True), training=True), clip,
            self.bn_group_size, type(self).__name__), axis=-1)

    def keys(self, encoder: MomentumEncoder, clip: tf.Tensor) -> tf.Tensor:
        """A momentum encoder's keys of the key clips (shuffle-BN)."""
        def encode(x):
            return self.embed(encoder["backbone"], encoder["projector"], x)
        if not self.nce.shuffle_bn:
            return encode(clip)
        return steps.shuffled_bn(encode, clip, self.bn_group_size,
                                 tf.stack([tf.cast(self.step, tf.int32), tf.constant(1)]))

    def contrastive_loss(self, query, keys, queue_positives, self_positive,
                         queue_column: str = "keys") -> tf.Tensor:
        """Eq. (2) over [own key, queue column] for L2-normalized queries and keys
        (B, D); unwritten queue rows are left out of both sums."""
        own = tf.reduce_sum(query * keys, axis=-1, keepdims=True)
        queue = tf.matmul(query, self.queue[queue_column], transpose_b=True)
        logits = tf.concat([own, queue], axis=1) / self.temperature
        counted = tf.concat([tf.ones_like(own, tf.bool),
                             tf.broadcast_to(self.queue.filled[None], tf.shape(queue))], axis=1)
        logits = tf.where(counted, logits, tf.constant(NEG_INF, logits.dtype))
        mask = tf.concat([self_positive[:, None], queue_positives], axis=1)
        return self.nce_loss(logits, mask)

    def nce_loss(self, logits: tf.Tensor, positives: tf.Tensor) -> tf.Tensor:
        """The loss of logits (B, 1 + queue) given their positives: eq. (2)."""
        return multi_positive_nce(logits, positives)

    def apply_step(self, loss, gradients, variables) -> None:
        """The optimizer step, held back until the queue is full when asked to."""
        self.apply_and_track(loss, gradients, variables, keep=(
            self.queue.is_full() if self.nce.wait_for_full_queue else None))

    def train_step(self, data):
        clips = self.clip_pairs(data)
        query_clip, key_clip = clips[self.modality]
        momentum = self.momentum.value_at(self.step, self.total_steps)
        self.momentum.update(self.online_modules(), momentum)
        keys = tf.stop_gradient(self.keys(self.momentum, key_clip))
        entries = self.batch_entries(data, clips)
        # Before this batch is enqueued; unwritten rows never count.
        positives = self.queue_positives(entries, tf.shape(keys)[0]) & self.queue.filled[None]
        self_positive = self.self_positive(positives)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            query = self.embed(self.backbone, self.projector, query_clip)
            loss = self.contrastive_loss(query, keys, positives, self_positive)
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_step(loss, tape.gradient(scaled_loss, variables), variables)
        self.queue.enqueue(keys=all_gather(keys),
                           **{name: all_gather(value) for name, value in entries.items()})
        return {"loss": self.loss_tracker.result(), "momentum": momentum,
                "queue_positives": tf.reduce_mean(tf.reduce_sum(tf.cast(positives, tf.float32),
                                                                axis=1))}

    # ---------------------------------------------------------- initialization
    def init_parts(self, name, source_attribute, binding):
        """The encoder and its projection head (the official code loads whole encoders);
        `after_initialization` then copies the trained stream into its momentum encoder."""
        if source_attribute not in HEADS:
            raise ValueError(f"{binding}: the source run's encoder is its "
                             f"{source_attribute!r}; expected an InfoNCE/UberNCE/CoCLR run "
                             f"(one of {sorted(HEADS)})")
        head = getattr(self, HEADS[self._encoders[name].attribute])
        return {source_attribute: self.encoder_model(name), HEADS[source_attribute]: head}


class InfoNCE(QueueNCEMethod):
    """Stage 1 of CoCLR (§3.1 eq. 1, §4.2): MoCo-style instance discrimination for one
    stream, the view's modality ("rgb" or "flow"), which names the encoder."""

    def queue_positives(self, entries, batch_size):
        del entries
        return tf.zeros([batch_size, self.queue.size], tf.bool)


class UberNCE(QueueNCEMethod):
    """InfoNCE with the label oracle (§3.1, Table 1): queue entries of the query's class
    are positives too. Needs labeled training shards.

    loss_form: how a query's several positives enter the loss (§3.1 does not decide).
      "mean_over_positives" (default; the official main_nce.py, which gave Table 1's
      UberNCE numbers): the mean over the positives of -log softmax (`mean_positive_nce`);
      "multi_instance": -log of the positives' summed softmax, eq. (2) as CoCLR's.
    """

    LOSS_FORMS = {"mean_over_positives": mean_positive_nce,
                  "multi_instance": multi_positive_nce}

    def __init__(self, views, nce: QueueNCE = QueueNCE(), *,
                 loss_form: str = "mean_over_positives", **kwargs):
        steps.check_choice("UberNCE", "loss_form", loss_form, tuple(self.LOSS_FORMS))
        super().__init__(views, nce, **kwargs)
        self.loss_form = loss_form

    def nce_loss(self, logits, positives):
        return self.LOSS_FORMS[self.loss_form](logits, positives)

    def extra_queue_columns(self, embedding_dim):
        del embedding_dim
        return {"label": ((), "int64", "zeros")}

    def batch_entries(self, data, clips):
        del clips
        labels = tf.cast(data["label"], tf.int64)
        tf.debugging.assert_non_negative(
            labels, message="UberNCE: every training video needs a class label (label -1 "
                            "= unlabeled in the training shards)")
        return {"label": labels}

    def queue_positives(self, entries, batch_size):
        del batch_size
        return entries["label"][:, None] == self.queue["label"][None]


class CoCLR(QueueNCEMethod):
    """Stage 2 of CoCLR (§3.2, Algorithm 1): trains the `modality` stream with positives
    mined by a frozen encoder of the other stream.

    Encoders: the trained stream (primary, attribute "backbone") and the sampler
    (attribute "sampler"), each named after its modality. `init_checkpoints` (e.g.
    {"rgb": "runs/infonce_rgb", "flow": "runs/infonce_flow"}) initializes each with its
    projection head from the other run (the official code loads the whole encoder);
    the momentum encoder then starts as a copy of the trained one.

    Args:
      views: `cotraining_views()`, RGB and flow of each clip.
      nce: the family's settings; modality: the trained stream.
      sampler_backbone: the other stream's backbone: a registry name (default: the
        family's backbone) or a built model (needed when `nce.backbone` is one).
      topk: K of eq. (3), the mined positives per query (0: only same-video ones).
      self_drop_prob: the final official code's variant: with this probability per
        step, the own key stops being a positive for queries that have other
        positives (0: the paper's eq. 2; the official code: 0.9).
      mine_only_when_full: no top-K positives until the queue has been filled once
        (the official code's behaviour: InfoNCE with same-video positives until then;
        it changes no update while `nce.wait_for_full_queue` holds the steps).
      simultaneous: Table 1's "sim" ablation (§4.4): both streams trained at once on
        L1 + L2 (eqs. 2 and 4), each mining its top-K positives with the other
        stream's momentum keys of the same clip. The second stream (attribute
        "sampler", now trained) has a momentum encoder of its own; the queue's
        "sampler" column holds its keys (its negatives and the first stream's mining
        features), the "keys" column the first stream's (the other way round).
    """

    def __init__(self, views, nce: QueueNCE = QueueNCE(), *, modality: str = "rgb",
                 sampler_backbone: str | keras.Model | None = None, topk: int = 5,
                 self_drop_prob: float = 0.0, mine_only_when_full: bool = False,
                 simultaneous: bool = False, **kwargs):
        if not 0 <= int(topk) <= nce.queue_size:
            raise ValueError(f"CoCLR.topk: expected 0 <= topk <= queue_size "
                             f"({nce.queue_size}), got {topk!r}")
        if not 0.0 <= self_drop_prob <= 1.0:
            raise ValueError(f"CoCLR.self_drop_prob: expected a probability in [0, 1], "
                             f"got {self_drop_prob!r}")
        if sampler_backbone is None and not isinstance(nce.backbone, str):
            raise ValueError("CoCLR.sampler_backbone: expected a registry name or a built "
                             "model when the family's backbone is a built model")
        view = views.get(VIEW) if isinstance(views, Mapping) else None
        if view is None or set(view.modalities) != set(STREAMS):
            raise ValueError(f"CoCLR.views: expected RGB and flow in one view 'clips' "
                             f"(cotraining_views), got {views!r}")
        super().__init__(views, nce, modality=modality, **kwargs)
        self.topk = int(topk)
        self.self_drop_prob = float(self_drop_prob)
        self.mine_only_when_full = mine_only_when_full
        self.simultaneous = bool(simultaneous)
        self.sampler_modality = other_stream(modality)
        self.sampler = nce.build_backbone(self.sampler_modality, sampler_backbone)
        self.sampler_projector = keras.models.clone_model(self.projector)
        # Frozen unless simultaneous: out of trainable_variables, BatchNorm on running
        # statistics.
        self.sampler.trainable = self.simultaneous
        self.sampler_projector.trainable = self.simultaneous
        if self.simultaneous:
            self.sampler_momentum = MomentumEncoder(
                self.sampler_modules(), owner="CoCLR", name="sampler_momentum",
                base_momentum=nce.base_momentum, schedule=nce.momentum_schedule)

    def declare_encoders(self, modality):
        return {modality: Encoder("backbone", VIEW, modality),
                other_stream(modality): Encoder("sampler", VIEW, other_stream(modality))}

    def extra_queue_columns(self, embedding_dim):
        return {"sampler": ((embedding_dim,), "float32", "zeros"),
                "video_id": ((), "int64", "zeros")}

    def sampler_modules(self) -> dict[str, keras.Model]:
        return {"backbone": self.sampler, "projector": self.sampler_projector}

    def momentum_pairs(self):
        pairs = super().momentum_pairs()
        if self.simultaneous:
            pairs.append((self.sampler_momentum, self.sampler_modules()))
        return pairs

    # ---------------------------------------------------------------- mining
    def sampler_features(self, clip: tf.Tensor) -> tf.Tensor:
        """The frozen sampler's L2-normalized embedding (B, D), in inference mode."""
        return tf.stop_gradient(tf.math.l2_normalize(tf.cast(self.sampler_projector(
            self.sampler(clip, training=False), training=False), tf.float32), axis=-1))

    def video_ids(self, data) -> tf.Tensor:
        """(B,) int64: batch["video_id"] when the batch has one; else an id unique to each
        sample of the run (step x global batch + global position), so only a clip's own
        key is a same-video positive."""
        if "video_id" in data:
            return tf.cast(data["video_id"], tf.int64)
        local = tf.shape(data["label"], out_type=tf.int64)[0]
        position = tf.cast(replica_id(), tf.int64) * local + tf.range(local)
        return tf.cast(self.step, tf.int64) * local * num_replicas() + position

    def batch_entries(self, data, clips):
        # The sampler sees the key clip's other modality (same window, crop and flip).
        return {"sampler": self.sampler_features(clips[self.sampler_modality][1]),
                "video_id": self.video_ids(data)}

    def queue_positives(self, entries, batch_size):
        del batch_size
        return self.mine(entries["sampler"], "sampler", entries["video_id"])

    def mine(self, features, column: str, video_ids) -> tf.Tensor:
        """(B, queue_size) bool: the queue rows of the same video, and the top-K others
        by the similarity of `features` (B, D) to the queue column `column` (eq. 3)."""
        same_video = video_ids[:, None] == self.queue["video_id"][None]
        if not self.topk:
            return same_video
        candidates = self.queue.filled[None] & ~same_video
        similarity = tf.matmul(features, self.queue[column], transpose_b=True)
        similarity = tf.where(candidates, similarity, tf.constant(NEG_INF, similarity.dtype))
        _, nearest = tf.math.top_k(similarity, k=self.topk)
        # Fewer than K candidates: the -inf picks are not candidates and drop out here.
        mined = (tf.reduce_max(tf.one_hot(nearest, self.queue.size), axis=1) > 0) & candidates
        if self.mine_only_when_full:
            mined &= self.queue.is_full()
        return same_video | mined

    def self_positive(self, queue_positives):
        keep = tf.ones(tf.shape(queue_positives)[:1], tf.bool)
        if not self.self_drop_prob:
            return keep
        # One draw per step for the whole batch, as in the official code.
        seed = tf.stack([tf.cast(self.step, tf.int32), tf.constant(7919, tf.int32)])
        drop = tf.random.stateless_uniform([], seed) < self.self_drop_prob
        return keep & ~(drop & tf.reduce_any(queue_positives, axis=1))

    # ---------------------------------------------------------------- the step
    def train_step(self, data):
        if not self.simultaneous:
            return super().train_step(data)
        clips = self.clip_pairs(data)
        (query_a, key_a), (query_b, key_b) = clips[self.modality], clips[self.sampler_modality]
        momentum = self.momentum.value_at(self.step, self.total_steps)
        for encoder, online in self.momentum_pairs():
            encoder.update(online, momentum)
        keys_a = tf.stop_gradient(self.keys(self.momentum, key_a))
        keys_b = tf.stop_gradient(self.keys(self.sampler_momentum, key_b))
        video_ids = self.video_ids(data)
        # Before this batch is enqueued; unwritten rows never count.
        positives_a = self.mine(keys_b, "sampler", video_ids) & self.queue.filled[None]
        positives_b = self.mine(keys_a, "keys", video_ids) & self.queue.filled[None]
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss_a = self.contrastive_loss(self.embed(self.backbone, self.projector, query_a),
                                           keys_a, positives_a, self.self_positive(positives_a))
            loss_b = self.contrastive_loss(
                self.embed(self.sampler, self.sampler_projector, query_b), keys_b, positives_b,
                self.self_positive(positives_b), queue_column="sampler")
            loss = loss_a + loss_b
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_step(loss, tape.gradient(scaled_loss, variables), variables)
        self.queue.enqueue(keys=all_gather(keys_a), sampler=all_gather(keys_b),
                           video_id=all_gather(video_ids))
        return {"loss": self.loss_tracker.result(), "momentum": momentum,
                f"loss_{self.modality}": loss_a, f"loss_{self.sampler_modality}": loss_b}


def other_stream(modality: str) -> str:
    return "flow" if modality == "rgb" else "rgb"
