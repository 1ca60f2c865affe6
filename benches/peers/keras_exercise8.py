"""Keras's epoch time for exercise 8a, 8c or 8f on the CIFAR-10 binary files simdnn reads.

Peers drift with the machine, so BENCHMARKS.md compares simdnn with Keras run on the same
machine, back to back. This builds the notebook's models (8a: 20 x Dense(100, ELU, He normal),
inputs / 255, Nadam 1e-4, batch 32; 8c: 8a with BatchNormalization after the inputs and after
every hidden Dense, which then has no activation, ELU following the normalisation; 8f: 20 x Dense(100, SELU, LeCun normal) on standardised
inputs, AlphaDropout(0.1), SGD with the notebook's OneCycleScheduler up to 0.05, batch 50),
uses the first 5,000 training records for validation as simdnn does, and prints each epoch's
seconds (training + validation) and validation accuracy.

    python3 -m venv v && v/bin/pip install tensorflow-cpu keras numpy
    v/bin/python benches/peers/keras_exercise8.py DATA_DIR 8a 4 [--reshuffle] [--early-stopping] [--seed N]

Seeded with `keras.utils.set_random_seed(42)`, Keras 3.15 / TensorFlow 2.21's `fit` repeats the
same shuffle at every epoch (BENCHMARKS.md, tenth session), which overfits sooner than a new
order per epoch. `--reshuffle` shuffles the training arrays before each epoch instead (numpy,
seeded), as simdnn does; it copies them, so leave it off for timing. `--early-stopping` adds the
recipes' early stopping (val_loss, patience 10, best weights restored; one state across the
per-epoch `fit` calls of `--reshuffle`) and prints the restored model's validation figures.
`--seed N` replaces the seed 42 of both (Keras's and the reshuffle's).
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402


def load(data_dir, names):
    raw = np.concatenate([np.fromfile(os.path.join(data_dir, n), np.uint8).reshape(-1, 3073) for n in names])
    return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].astype(np.int64)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        print(f"epoch {epoch + 1} {seconds:.2f} s val_accuracy {logs['val_accuracy']:.4f} "
              f"val_loss {logs['val_loss']:.5f}", flush=True)


class EarlyStop(keras.callbacks.Callback):
    """EarlyStopping(patience=10, restore_best_weights=True) whose state outlives one `fit`."""

    def __init__(self, patience=10):
        super().__init__()
        self.patience, self.best_loss, self.best_epoch, self.best_weights = patience, np.inf, 0, None
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch = logs["val_loss"], epoch + 1
            self.best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.stopped = self.model.stop_training = True


class OneCycle(keras.callbacks.Callback):
    """The notebook's OneCycleScheduler (rate only)."""

    def __init__(self, iterations, max_rate):
        super().__init__()
        self.iterations, self.max_rate = iterations, max_rate
        self.start_rate, self.last_rate = max_rate / 10, max_rate / 10 / 1000
        self.half = int(iterations * 0.9) // 2
        self.iteration = 0

    def _between(self, i0, i1, r0, r1):
        return (r1 - r0) * (self.iteration - i0) / (i1 - i0) + r0

    def on_batch_begin(self, batch, logs=None):
        if self.iteration < self.half:
            rate = self._between(0, self.half, self.start_rate, self.max_rate)
        elif self.iteration < 2 * self.half:
            rate = self._between(self.half, 2 * self.half, self.max_rate, self.start_rate)
        else:
            rate = self._between(2 * self.half, self.iterations, self.start_rate, self.last_rate)
        self.iteration += 1
        self.model.optimizer.learning_rate.assign(rate)


def main():
    data_dir, preset, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reshuffle = "--reshuffle" in sys.argv[4:]
    early_stopping = "--early-stopping" in sys.argv[4:]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv[4:] else 42
    if preset not in ("8a", "8c", "8f"):
        sys.exit(f"unknown preset {preset!r}: 8a, 8c or 8f")
    x, y = load(data_dir, [f"data_batch_{i}.bin" for i in range(1, 6)])
    x_valid, y_valid, x_train, y_train = x[:5000], y[:5000], x[5000:], y[5000:]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.layers.Input((32, 32, 3)), keras.layers.Flatten()])
    callbacks = [EpochTimer()]
    if preset == "8a":
        x_train, x_valid = x_train / 255.0, x_valid / 255.0
        for _ in range(20):
            model.add(keras.layers.Dense(100, activation="elu", kernel_initializer="he_normal"))
        optimizer, batch_size = keras.optimizers.Nadam(learning_rate=1e-4), 32
    elif preset == "8c":
        x_train, x_valid = x_train / 255.0, x_valid / 255.0
        model.add(keras.layers.BatchNormalization())
        for _ in range(20):
            model.add(keras.layers.Dense(100, kernel_initializer="he_normal"))
            model.add(keras.layers.BatchNormalization())
            model.add(keras.layers.Activation("elu"))
        optimizer, batch_size = keras.optimizers.Nadam(learning_rate=1e-4), 32
    else:
        x_train, x_valid = x_train.astype(np.float32), x_valid.astype(np.float32)
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        x_train, x_valid = (x_train - mean) / std, (x_valid - mean) / std
        for _ in range(20):
            model.add(keras.layers.Dense(100, activation="selu", kernel_initializer="lecun_normal"))
        model.add(keras.layers.AlphaDropout(0.1))
        optimizer, batch_size = keras.optimizers.SGD(learning_rate=1e-3), 50
        callbacks.append(OneCycle(-(-len(x_train) // batch_size) * epochs, 0.05))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    stop = EarlyStop() if early_stopping else None
    if stop:
        callbacks.append(stop)
    if not reshuffle:
        model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
                  validation_data=(x_valid, y_valid), callbacks=callbacks, verbose=0)
    else:
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            order = rng.permutation(len(x_train))
            model.fit(x_train[order], y_train[order], epochs=epoch + 1, initial_epoch=epoch, batch_size=batch_size,
                      shuffle=False, validation_data=(x_valid, y_valid), callbacks=callbacks, verbose=0)
            if stop and stop.stopped:
                break
    if stop:
        model.set_weights(stop.best_weights)
        loss, accuracy = model.evaluate(x_valid, y_valid, verbose=0)
        print(f"stopped {stop.stopped} best_epoch {stop.best_epoch} restored val_accuracy {accuracy:.4f} "
              f"val_loss {loss:.5f}", flush=True)


if __name__ == "__main__":
    main()
