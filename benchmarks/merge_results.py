"""Merge the per-topic result files (benchmarks/results/*.md) into benchmarks/RESULTS.md.

    python benchmarks/merge_results.py

Each benchmark script writes its own section file; this only concatenates them under one header,
in a fixed order, so that RESULTS.md always shows what the scripts last measured.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["core", "core_lr", "drift", "forecast", "nab", "anomaly_multivariate", "anomaly", "multioutput",
         "runtime", "kafka", "sequence", "gpu"]


def main():
    files = sorted((HERE / "results").glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    parts = ["# streamnn benchmark results", "",
             "Every table below was written by the script named in its section, on the development machine "
             "(2 cores, no GPU, one torch thread unless stated), with all competitors in the same run. "
             "Ratios are what count: the machine is shared and absolute rates vary between runs.", ""]
    for f in files:
        text = f.read_text().strip()
        parts += [text.replace("](", "](results/") if "](results/" not in text else text, ""]
    (HERE / "RESULTS.md").write_text("\n".join(parts) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'} from {[f.name for f in files]}")


if __name__ == "__main__":
    main()
