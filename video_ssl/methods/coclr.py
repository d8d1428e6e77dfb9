"""InfoNCE, UberNCE and CoCLR (Han, Xie, Zisserman 2020, "Self-supervised Co-training
for Video Representation Learning"; sections, equations and Algorithm 1 refer to it).

All three are MoCo with one query clip and one key clip per video (Algorithm 1): the
online encoder embeds clip 0 (the query), the momentum encoder clip 1 (its key; the
clips are cut at random times and augmented independently, §4.2), and the loss is
the multi-instance InfoNCE of eq. (2) over [own key, queue]; only the keys are
enqueued. They differ in which queue entries are positives of a query besides its
own key:

- `InfoNCE` (eq. 1): none (instance discrimination), for RGB or flow (`modality`).
- `UberNCE` (§3.1): the entries of the query's class (the label oracle; a label column
  in the queue).
- `CoCLR` (§3.2, eqs. 2-5): the entries of the same video, and the top-K entries by
  the similarity, in a frozen encoder of the other stream (the "sampler", run in
  inference mode), of the key clip's other modality to the sampler features in the
  queue (eq. 3); same-video entries are not among the K candidates. The queue holds
  aligned columns: keys of the trained stream, sampler features (L2-normalized),
  video ids and the filled flags. Video ids: `batch["video_id"]` when the input
  pipeline provides one (the official code uses the source-video group, so UCF101's
  clips cut from one YouTube video are positives of each other); otherwise an id
  unique to each sample, so only the own key is a same-video positive.
- `SimultaneousCoCLR`: Table 1's "sim" ablation, both streams trained at once.

Positive masks are built before the current batch is enqueued. Queue slots not yet
written count neither as positives nor as negatives. Deliberate difference: the
official code starts the queue from random unit vectors that act as negatives until
overwritten (the first queue_size / batch steps only).
"""
from __future__ import annotations


import keras
import tensorflow as tf

from video_ssl.distribute import all_gather, num_replicas, replica_id
from video_ssl.methods.losses import multi_positive_nce
from video_ssl.methods.base import EncoderInput, configurable, training_view
from video_ssl.methods.moco import MoCo
from video_ssl.methods.momentum import MomentumEncoder
from video_ssl.methods.rho import MODALITY_CHANNELS, VIEW
from video_ssl.models import build_backbone

# The trained stream's head and the sampler's, by the attribute of their backbone.
HEADS = {"backbone": "projector", "sampler": "sampler_projector"}
NEG_INF = -float("inf")


@configurable
class QueueNCE(MoCo):
    """The family's base (gin: `QueueNCE.<arg>` binds InfoNCE, UberNCE and CoCLR alike).
    One query and one key clip per video against an aligned queue; subclasses say
    which queue entries are positives (`queue_positives`) and what else a queue row
    holds (`extra_queue_columns` + `batch_entries`).

    Args: MoCo's, with the paper's defaults (§A.1-A.3); `modality` (RhoMethod) is the
    trained stream, "rgb" or "flow" (2 input channels). MoCo's rho, loss_per_positive
    and gradient_aggregation do not apply (one query per video).
    """

    def __init__(self, backbone="s3d", *, queue_size: int = 2048, temperature: float = 0.07,
                 hidden_dim: int = 1024, embedding_dim: int = 128, num_layers: int = 2,
                 base_momentum: float = 0.999, momentum_schedule: str = "constant",
                 **kwargs):
        for name in {"rho", "loss_per_positive", "gradient_aggregation"} & set(kwargs):
            raise ValueError(f"{type(self).__name__}.{name}: not a setting of this method; one "
                             "query and one key clip per video (Algorithm 1)")
        super().__init__(backbone, rho=2, queue_size=queue_size, temperature=temperature,
                         hidden_dim=hidden_dim, embedding_dim=embedding_dim,
                         num_layers=num_layers, base_momentum=base_momentum,
                         momentum_schedule=momentum_schedule, **kwargs)
        # What CoCLR builds its sampler from (the other stream, same architecture).
        self.backbone_name = backbone if isinstance(backbone, str) else None
        self.backbone_kwargs = dict(kwargs.get("backbone_kwargs") or {})

    # ------------------------------------------------------------------ hooks
    @property
    def input_modalities(self) -> tuple[str, ...]:
        return (self.modality,)

    def batch_entries(self, data, clips: dict) -> dict:
        """This replica's rows of the extra queue columns, {column: (B, ...)}."""
        del data, clips
        return {}

    def queue_positives(self, entries: dict, batch_size) -> tf.Tensor:
        """(B, queue_size) bool: the queue rows that are positives of each query (rows
        never written are masked out by the caller)."""
        del entries
        return tf.zeros([batch_size, self.queue.size], tf.bool)

    def self_positive(self, queue_positives: tf.Tensor) -> tf.Tensor:
        """(B,) bool: whether a query's own key is a positive."""
        return tf.ones(tf.shape(queue_positives)[:1], tf.bool)

    # ------------------------------------------------------------------ the step
    def clip_pairs(self, data) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
        """modality -> (clip 0, clip 1), each (B, T, H, W, C)."""
        values = self.view_inputs(data, VIEW)
        pairs = {}
        for modality in self.input_modalities:
            clips = values.get(modality)
            if clips is None or clips.shape.rank != 6 or clips.shape[1] != 2:
                raise ValueError(
                    f"batch['views'][{VIEW!r}][{modality!r}]: expected shape (batch, 2 clips, "
                    f"T, H, W, C), got {None if clips is None else tuple(clips.shape)}")
            pairs[modality] = tuple(tf.unstack(clips, axis=1))
        return pairs

    def embed(self, backbone, projector, clip) -> tf.Tensor:
        """A query: the L2-normalized embedding (B, D) of an online encoder."""
        return tf.math.l2_normalize(self.grouped(lambda x: projector(
            backbone(x, training=True), training=True), clip), axis=-1)

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
        return multi_positive_nce(logits, mask)

    def train_step(self, data):
        clips = self.clip_pairs(data)
        query_clip, key_clip = clips[self.modality]
        momentum = self.current_momentum()
        self.momentum.update(self.online_modules(), momentum)
        keys = tf.stop_gradient(self.momentum_target(key_clip, 1))
        entries = self.batch_entries(data, clips)
        # Before this batch is enqueued; unwritten rows never count.
        positives = self.queue_positives(entries, tf.shape(keys)[0]) & self.queue.filled[None]
        self_positive = self.self_positive(positives)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            query = self.embed(self.backbone, self.projector, query_clip)
            loss = self.contrastive_loss(query, keys, positives, self_positive)
            scaled_loss = self.scaled_for_gradients(loss)
        self.apply_gradients(loss, tape.gradient(scaled_loss, variables), variables)
        self.queue.enqueue(keys=all_gather(keys),
                           **{name: all_gather(value) for name, value in entries.items()})
        return {"loss": self.loss_tracker.result(), "momentum": momentum,
                "queue_positives": tf.reduce_mean(tf.reduce_sum(tf.cast(positives, tf.float32),
                                                                axis=1))}

    # ---------------------------------------------------------- initialization
    def init_parts(self, name, source_attribute, binding):
        """The encoder and its projection head (the official code loads whole encoders);
        `after_initialization` then copies the trained stream into its momentum encoder
        (Algorithm 1: f_k.params = f_q.params)."""
        if source_attribute not in HEADS:
            raise ValueError(f"{binding}: the source run's encoder is its "
                             f"{source_attribute!r}; expected an InfoNCE/UberNCE/CoCLR run "
                             f"(one of {sorted(HEADS)})")
        head = getattr(self, HEADS[self.encoder_attributes()[name]])
        return {source_attribute: self.encoders()[name], HEADS[source_attribute]: head}


@configurable
class InfoNCE(QueueNCE):
    """Stage 1 of CoCLR (§3.1 eq. 1, §4.2): MoCo-style instance discrimination for one
    stream. The encoder is named after its modality ("rgb" or "flow")."""

    def __init__(self, backbone: str | keras.Model | None = None, **kwargs):
        # QueueNCE's arguments stay out of this signature (as in CoCLR): gin writes a
        # configurable's signature defaults into operative_config.gin, and `InfoNCE.
        # queue_size = 2048` there would override `QueueNCE.queue_size` when evaluation
        # or export rebuild the run from it.
        super().__init__(**({} if backbone is None else {"backbone": backbone}), **kwargs)


@configurable
class UberNCE(QueueNCE):
    """InfoNCE with the label oracle (§3.1, Table 1): queue entries of the query's class
    are positives too. Needs labeled training shards."""

    def __init__(self, backbone: str | keras.Model | None = None, **kwargs):
        # As InfoNCE's: only UberNCE's own bindings in the operative config.
        super().__init__(**({} if backbone is None else {"backbone": backbone}), **kwargs)

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


@configurable
class CoCLR(QueueNCE):
    """Stage 2 of CoCLR (§3.2, Algorithm 1): trains the `modality` stream with positives
    mined by a frozen encoder of the other stream.

    Encoders: the trained stream (primary, attribute "backbone") and the sampler
    (attribute "sampler"), each named after its modality. `init_checkpoints` (e.g.
    {"rgb": "runs/infonce_rgb", "flow": "runs/infonce_flow"}) initializes each with its
    projection head from the other run (the official code loads the whole encoder);
    the momentum encoder then starts as a copy of the trained one.

    Args:
      sampler_backbone: the other stream's backbone: a registry name (default: the
        same name as `backbone`) or a built model (needed when `backbone` is one).
      topk: K of eq. (3), the mined positives per query (0: only same-video ones).
      self_drop_prob: the final official code's variant: with this probability per
        step, the own key stops being a positive for queries that have other
        positives (0: the paper's eq. 2; the official code: 0.9).
      mine_only_when_full: no top-K positives until the queue has been filled once
        (the official code's behaviour: InfoNCE with same-video positives until then).
    """

    def __init__(self, backbone: str | keras.Model | None = None, *,
                 sampler_backbone: str | keras.Model | None = None, topk: int = 5,
                 self_drop_prob: float = 0.0, mine_only_when_full: bool = False, **kwargs):
        # backbone=None leaves it to QueueNCE (its gin binding or default): passing a
        # default from here would override `QueueNCE.backbone`.
        super().__init__(**({} if backbone is None else {"backbone": backbone}), **kwargs)
        if not 0 <= int(topk) <= self.queue.size:
            raise ValueError(f"CoCLR.topk: expected 0 <= topk <= queue_size "
                             f"({self.queue.size}), got {topk!r}")
        if not 0.0 <= self_drop_prob <= 1.0:
            raise ValueError(f"CoCLR.self_drop_prob: expected a probability in [0, 1], got "
                             f"{self_drop_prob!r}")
        self.topk = int(topk)
        self.self_drop_prob = float(self_drop_prob)
        self.mine_only_when_full = mine_only_when_full
        self.sampler_modality = "flow" if self.modality == "rgb" else "rgb"
        if sampler_backbone is None:
            if self.backbone_name is None:
                raise ValueError("CoCLR.sampler_backbone: expected a registry name or a built "
                                 f"{self.sampler_modality} model when backbone is a built model")
            sampler_backbone = self.backbone_name
        if isinstance(sampler_backbone, str):
            sampler_backbone = build_backbone(
                sampler_backbone, synchronized_bn=self.synchronized_bn,
                input_channels=MODALITY_CHANNELS[self.sampler_modality], **self.backbone_kwargs)
        self.sampler = sampler_backbone
        self.sampler_projector = keras.models.clone_model(self.projector)
        # Frozen: not in trainable_variables, and its BatchNorm uses running statistics.
        self.sampler.trainable = False
        self.sampler_projector.trainable = False
        self._views = {VIEW: training_view(num_clips=2, same_window=False,
                                           modalities=("rgb", "flow"))}

    @property
    def input_modalities(self):
        return ("rgb", "flow")

    def encoder_attributes(self):
        return {self.modality: "backbone", self.sampler_modality: "sampler"}

    def encoder_inputs(self):
        return {m: EncoderInput(VIEW, m) for m in (self.modality, self.sampler_modality)}

    def extra_queue_columns(self, embedding_dim):
        return {"sampler": ((embedding_dim,), "float32", "zeros"),
                "video_id": ((), "int64", "zeros")}

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


@configurable
class SimultaneousCoCLR(CoCLR):
    """Table 1's "sim" ablation (§4.4): both streams trained at once on L1 + L2 (eqs. 2
    and 4), each mining its top-K positives with the other stream's momentum keys of
    the same clip. The second stream (attribute "sampler", now trained) has a momentum
    encoder of its own; the queue's "sampler" column holds its keys (its negatives and
    the first stream's mining features), the "keys" column the first stream's (the
    other way round). Shuffle-BN (several replicas) is applied to the first stream's
    keys only; on one device there is nothing to shuffle.
    """

    def __init__(self, backbone: str | keras.Model | None = None, **kwargs):
        super().__init__(**({} if backbone is None else {"backbone": backbone}), **kwargs)
        self.sampler.trainable = True
        self.sampler_projector.trainable = True
        self.sampler_momentum = MomentumEncoder(self.sampler_modules(), name="sampler_momentum")

    def sampler_modules(self) -> dict[str, keras.Model]:
        return {"backbone": self.sampler, "projector": self.sampler_projector}

    def momentum_pairs(self):
        return [(self.momentum, self.online_modules()),
                (self.sampler_momentum, self.sampler_modules())]

    def train_step(self, data):
        clips = self.clip_pairs(data)
        (query_a, key_a), (query_b, key_b) = clips[self.modality], clips[self.sampler_modality]
        momentum = self.current_momentum()
        for encoder, online in self.momentum_pairs():
            encoder.update(online, momentum)
        keys_a = tf.stop_gradient(self.momentum_target(key_a, 1))
        keys_b = tf.stop_gradient(tf.math.l2_normalize(self.grouped(
            lambda x: self.sampler_momentum["projector"](
                self.sampler_momentum["backbone"](x, training=True), training=True), key_b),
            axis=-1))
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
        self.apply_gradients(loss, tape.gradient(scaled_loss, variables), variables)
        self.queue.enqueue(keys=all_gather(keys_a), sampler=all_gather(keys_b),
                           video_id=all_gather(video_ids))
        return {"loss": self.loss_tracker.result(), "momentum": momentum,
                f"loss_{self.modality}": loss_a, f"loss_{self.sampler_modality}": loss_b}
