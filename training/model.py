"""The Keras model that becomes `model.tflite`: image -> frozen backbone -> embedding -> score.

Score (higher = more like the label):
    w_knn * max_i <e, b_i>  -  w_ae * mean((AE(e) - e)^2)  +  bias
where e is the L2-normalised embedding, b_i the coreset bank of training embeddings (kept inside the
graph as a frozen Dense layer, so nearest-neighbour search is one int8 matmul + max), and AE a small
dense autoencoder trained on the label's embeddings only. `w_*` standardise each term on the training
images so neither dominates by scale. Everything is standard Keras layers so the converter can make a
full-integer int8 model.
"""

from __future__ import annotations

import keras
import numpy as np

from edge_oneclass.training.backbone.variants import VARIANTS
from edge_oneclass.training.head import Head, build_embedding_autoencoder

BACKBONES = (*VARIANTS, "none")   # efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, none
DEFAULT_BACKBONE = "efficientnet_lite0"


def build_embedder(backbone: str, image_size: int) -> keras.Model:
    """Pixels (float 0..255, RGB) -> L2-normalised embedding (the backbone's ImageNet logits), frozen."""
    if backbone not in VARIANTS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    from edge_oneclass.training.backbone.efficientnet_lite import build_efficientnet_lite

    net = build_efficientnet_lite(backbone, image_size=image_size, head="logits", weights=True)
    net.trainable = False
    inp = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    e = net(inp, training=False)
    e = keras.layers.UnitNormalization(name="embedding")(e)
    model = keras.Model(inp, e, name="embedder")
    model.trainable = False
    return model


def build_scorer(embedder: keras.Model, head: Head) -> keras.Model:
    """One model, two outputs per image: the score (the graph the device decides with) and the embedding it is
    built on (for the device's local feedback bank).

    The weights are folded into the layers before each term is formed (bank * w_knn; AE output and
    embedding * sqrt(w_ae)) so both terms reach the final subtraction already on a common O(1) scale:
    in int8 every tensor has one scale, and a final layer mixing a 1e-4 term with a 1e1 term would round
    one of them to nothing. With background images, `head.neg_bank` adds the outlier-exposure term
    `- w_neg * max_j <e, n_j>`: frames like the empty scene score lower.
    """
    weights, bank, neg_bank = head.weights, head.bank, head.neg_bank
    size = embedder.input_shape[1]
    c = float(np.sqrt(weights.w_ae))
    inp = keras.Input((size, size, 3), dtype="float32", name="image")
    e = embedder(inp)
    sims = keras.layers.Dense(len(bank), use_bias=False, trainable=False, name="bank")(e)
    nearest = keras.layers.GlobalMaxPooling1D(name="nearest")(keras.layers.Reshape((-1, 1), name="bank_col")(sims))
    autoencoder = build_embedding_autoencoder(bank.shape[1], hidden=head.ae[0][0].shape[1],
                                              code=head.ae[1][0].shape[1])
    recon = autoencoder(e)
    e_scaled = keras.layers.Rescaling(c, name="embedding_scaled")(e)
    recon_scaled = keras.layers.Rescaling(c, name="recon_scaled")(recon)
    diff = keras.layers.Subtract(name="ae_diff")([recon_scaled, e_scaled])
    sq = keras.layers.Multiply(name="ae_sq")([diff, diff])
    err = keras.layers.GlobalAveragePooling1D(name="ae_err")(keras.layers.Reshape((-1, 1), name="sq_col")(sq))
    raw = keras.layers.Subtract(name="terms")([nearest, err])
    if neg_bank is not None and len(neg_bank):
        neg_sims = keras.layers.Dense(len(neg_bank), use_bias=False, trainable=False, name="neg_bank")(e)
        nearest_neg = keras.layers.GlobalMaxPooling1D(name="nearest_neg")(
            keras.layers.Reshape((-1, 1), name="neg_bank_col")(neg_sims))
        raw = keras.layers.Subtract(name="terms_oe")([raw, nearest_neg])
    score = keras.layers.Rescaling(1.0, offset=weights.bias, name="score")(raw)
    model = keras.Model(inp, [score, e], name="scorer")
    model.get_layer("bank").set_weights([(bank.T * weights.w_knn).astype(np.float32)])
    autoencoder.set_weights([w for layer in head.ae for w in layer])
    if neg_bank is not None and len(neg_bank):
        model.get_layer("neg_bank").set_weights([(neg_bank.T * weights.w_neg).astype(np.float32)])
    return model


def build_pixel_autoencoder(image_size: int, seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """The `--backbone none` baseline: convolutional autoencoder on pixels.

    Returns (trainable autoencoder on [0,1] images, scorer taking 0..255 pixels and returning
    -mean squared reconstruction error, so higher = more like the label as for every model).
    UpSampling2D + Conv2D instead of Conv2DTranspose: XNNPACK accelerates the former in int8.
    """
    init = keras.initializers.GlorotUniform(seed=seed)
    inp = keras.Input((image_size, image_size, 3), name="unit_pixels")
    x = inp
    for i, f in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", kernel_initializer=init,
                                name=f"enc{i}")(x)
    for i, f in enumerate((64, 32, 16)):
        x = keras.layers.UpSampling2D(name=f"up{i}")(x)
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer=init, name=f"dec{i}")(x)
    out = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid", kernel_initializer=init, name="recon")(x)
    ae = keras.Model(inp, out, name="pixel_autoencoder")

    img = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    unit = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(img)
    rec = ae(unit)
    diff = keras.layers.Subtract(name="px_diff")([rec, unit])
    sq = keras.layers.Multiply(name="px_sq")([diff, diff])
    mse = keras.layers.GlobalAveragePooling2D(name="px_mse_c")(sq)
    mse = keras.layers.Dense(1, use_bias=False, trainable=False, name="score")(mse)
    scorer = keras.Model(img, mse, name="pixel_scorer")
    scorer.get_layer("score").set_weights([np.full((3, 1), -1.0 / 3.0, np.float32)])
    return ae, scorer
