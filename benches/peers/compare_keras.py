"""simdnn's epoch time against Keras's, in alternated rounds on the same machine.

On a shared VM both programs' speeds drift by up to 2 x within minutes, so a ratio is only
meaningful between runs made close together. Each round runs Keras for two epochs
(keras_exercise8.py, beside this file) and then `simdnn train --preset P --epochs 2`, and
divides simdnn's second epoch by Keras's (both past their start-up: Keras's first epoch
includes tracing the graph). Prints every round, then the median ratio and the range.

Around each program, `simdnn bench cores` measures how long a cache line takes between the
two cores. A VM host moves vCPUs between dies within seconds: at about 50 ns they share one,
at 300 ns or more they do not and both programs run slower, by different amounts. Rounds
where any probe read above 200 ns are marked "apart", and the median of the other rounds is
printed too.

`--precisions f32,bf16` runs simdnn once per precision in every round (`--precision`: bf16
multiplies every dense layer in bf16, sums in f32), each against the round's Keras epoch.

    python3 benches/peers/compare_keras.py --python v/bin/python \\
        --simdnn target/release/simdnn DATA_DIR 8a 5
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(command):
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"cannot run {command[0]}: {e}")


def keras_second_epoch(python, data_dir, preset):
    out = run([python, os.path.join(HERE, "keras_exercise8.py"), data_dir, preset, "2"])
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["epoch", "2"]:
            return float(fields[2])
    sys.exit(f"keras_exercise8.py printed no second epoch:\n{out.stdout}\n{out.stderr}")


def simdnn_second_epoch(simdnn, data_dir, preset, precision):
    with tempfile.TemporaryDirectory() as out_dir:
        trained = run([simdnn, "train", "--preset", preset, "--epochs", "2", "--precision", precision,
                       "--data", data_dir, "--out", out_dir])
        if trained.returncode != 0:
            sys.exit(f"{simdnn} train failed:\n{trained.stderr}")
        with open(os.path.join(out_dir, "history.csv")) as f:
            rows = list(csv.DictReader(f))
    return float(rows[1]["seconds"])


# Core-to-core round trips above this mean the vCPUs sat on different dies.
APART_NS = 200.0


def round_trip_ns(simdnn):
    out = run([simdnn, "bench", "cores", "--seconds", "0.2", "--json"])
    if out.returncode != 0:
        sys.exit(f"{simdnn} bench cores failed:\n{out.stderr}")
    return json.loads(out.stdout)["round_trip_ns"]


def summary(label, ratios):
    median = statistics.median(ratios)
    return (f"{label}: median simdnn/Keras {median:.3f} (Keras/simdnn {1 / median:.2f}) over {len(ratios)} "
            f"rounds, range {min(ratios):.3f}-{max(ratios):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="a Python with tensorflow-cpu and keras")
    parser.add_argument("--simdnn", default="target/release/simdnn")
    parser.add_argument("data_dir", metavar="DATA_DIR")
    parser.add_argument("preset", choices=["8a", "8c", "8f"])
    parser.add_argument("rounds", type=int, metavar="ROUNDS")
    parser.add_argument("--precisions", default="f32", help="simdnn's --precision values, comma-separated")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"ROUNDS must be at least 1, got {args.rounds}")
    precisions = args.precisions.split(",")
    for precision in precisions:
        if precision not in ("f32", "bf16"):
            parser.error(f"--precisions: unknown precision {precision!r} (accepted: f32, bf16)")
    if not os.path.isdir(args.data_dir):
        parser.error(f"DATA_DIR {args.data_dir!r} is not a directory")
    for flag, program in (("--python", args.python), ("--simdnn", args.simdnn)):
        if shutil.which(program) is None:
            parser.error(f"{flag} {program!r} is not an executable")
    ratios = {p: [] for p in precisions}
    together = {p: [] for p in precisions}
    for i in range(1, args.rounds + 1):
        probes = [round_trip_ns(args.simdnn)]
        keras_s = keras_second_epoch(args.python, args.data_dir, args.preset)
        probes.append(round_trip_ns(args.simdnn))
        for precision in precisions:
            simdnn_s = simdnn_second_epoch(args.simdnn, args.data_dir, args.preset, precision)
            probes.append(round_trip_ns(args.simdnn))
            ratio = simdnn_s / keras_s
            ratios[precision].append(ratio)
            # A probe before Keras or after this run above the threshold marks the pair apart.
            apart = max(probes[:2] + probes[-1:]) > APART_NS
            if not apart:
                together[precision].append(ratio)
            print(f"{time.strftime('%H:%M:%S')} round {i}: Keras {keras_s:.2f} s, simdnn {precision} {simdnn_s:.3f} s, "
                  f"simdnn/Keras {ratio:.3f} (Keras/simdnn {keras_s / simdnn_s:.2f}); core round trips "
                  f"{'/'.join(f'{p:.0f}' for p in probes[:2] + probes[-1:])} ns{' (apart)' if apart else ''}",
                  flush=True)
    for precision in precisions:
        label = f"{args.preset} {precision}"
        print(summary(f"{label}, all rounds", ratios[precision]))
        if together[precision]:
            print(summary(f"{label}, rounds with the vCPUs together", together[precision]))
        else:
            print(f"{label}: no round had the vCPUs together (every one read a probe above {APART_NS:.0f} ns)")


if __name__ == "__main__":
    main()
