#!/usr/bin/env python3
"""Render `scripts/bench.sh --json` documents into docs/performance.md.

    scripts/bench-report.py docs/bench/*.json

Replaces what lies between the `<!-- bench:begin -->` and
`<!-- bench:end -->` markers of docs/performance.md with one table per
document: every transfer's median MiB/s beside its baseline from the same
run, the spread of the runs, and the other figures the run printed. The
figures in that section are thus never copied by hand; rerun the benchmark
with --json, commit the file under docs/bench/, and run this.
"""
import json
import pathlib
import sys

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

OPS = [
    ("push", "push"),
    ("push_hash_first", "push --hash-first"),
    ("push_tls", "push over TLS"),
    ("pull", "pull"),
    ("pull_direct_io", "pull --direct-io"),
    ("pull_tls", "pull over TLS"),
    ("cp", "cp (page cache)"),
    ("cp_from_disk", "cp from disk"),
]


def rate(mib, seconds):
    return mib / seconds if seconds > 0 else float("nan")


def render(path):
    doc = json.loads(path.read_text())
    rows = [r for r in doc["results"] if "op" in r]
    other = {k: v for r in doc["results"] if "op" not in r for k, v in r.items()}
    m, s = doc["machine"], doc["settings"]
    out = [
        f"### `{path.name}`",
        "",
        f"{doc['date']}, {m['cores']} cores, {m['memory_kib'] // 1048576} GiB, kernel "
        f"`{m['kernel']}`; median of {s['reps']} runs; Garage fsync {json.dumps(s['garage_fsync'])}, "
        f"refill {json.dumps(s['refill'])}, hot_read_secs {s['hot_read_secs']}.",
        "",
        "| size | op | MiB/s (median) | runs, MiB/s | baseline, same runs | × baseline | × cp |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in s["sizes_mib"]:
        by_op = {r["op"]: r for r in rows if r["size_mib"] == size}
        cp = by_op.get("cp")
        for op, label in OPS:
            r = by_op.get(op)
            if r is None:
                continue
            runs = [rate(size, x) for x in r["runs_seconds"]]
            spread = f"{min(runs):.0f}–{max(runs):.0f}" if runs else ""
            base = by_op.get(
                {"curl PUT to Garage": "curl_put", "curl GET from Garage": "curl_get"}.get(
                    r["baseline"], "cp"
                )
            )
            base_txt = (
                f"{r['baseline']} {rate(size, base['seconds']):.0f} MiB/s"
                if base and not op.startswith("cp")
                else ""
            )
            vs_base = f"{r['vs_baseline']:.2f}" if base_txt else ""
            vs_cp = f"{cp['seconds'] / r['seconds']:.2f}" if cp and op != "cp" else ""
            out.append(
                f"| {size} MiB | {label} | {r['mib_per_s']:.0f} | {spread} | {base_txt} | {vs_base} | {vs_cp} |"
            )
    out.append("")
    for key, value in sorted(other.items()):
        out.append(f"- `{key}`: `{json.dumps(value)}`")
    out.append("")
    return "\n".join(out)


def main(paths):
    if not paths:
        sys.exit("usage: scripts/bench-report.py FILE.json...")
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{DOC} has no {BEGIN} … {END} section")
    body = "\n".join(render(pathlib.Path(p)) for p in sorted(paths))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n\n{body}\n{END}{tail}")
    print(f"rendered {len(paths)} run(s) into {DOC}")


if __name__ == "__main__":
    main(sys.argv[1:])
