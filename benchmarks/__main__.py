"""The benchmarks' one entry point: `python -m benchmarks COMMAND [options]`.

python -m benchmarks run [--quick] [--only serving,precision,...]   the parts of `make bench` (benchmarks.run.PARTS)
python -m benchmarks soak [--duration-s 180]                        a long mixed load: leaks and drift (`make soak`)
python -m benchmarks perf-analyzer                                  Triton's perf_analyzer (`make bench-perf-analyzer`)
python -m benchmarks versus --ref main                              another commit's server against this tree's
python -m benchmarks clip [--quick]                                 the clip part alone, with its own JSON record
python -m benchmarks duplicate-threshold                            the default threshold of `image-search duplicates`
python -m benchmarks duplicate-scale [--sizes 20000,200000]         its run time by collection size, Milvus server

(benchmarks.naive_server, benchmarks.litserve_server, benchmarks.search_bench, benchmarks.scale and
benchmarks.filtered_search also run as modules: the parts start them, each in a process of its own.)
"""

import argparse
import sys

from benchmarks import clip_bench, duplicate_scale, duplicate_threshold, perf_analyzer, run, soak, versus

COMMANDS = {
    "run": (run, "Run the benchmark's parts: one table, a JSON record and a chart."),
    "soak": (soak, "Soak the server: a long mixed load, to show nothing leaks or drifts."),
    "perf-analyzer": (perf_analyzer, "Triton's perf_analyzer against the server over gRPC and REST."),
    "versus": (versus, "Another commit's server against this tree's, in alternating rounds."),
    "clip": (clip_bench, "CLIP text and image throughput on its own, with its own JSON record."),
    "duplicate-threshold": (
        duplicate_threshold,
        "The default threshold of `image-search duplicates`, on planted copies.",
    ),
    "duplicate-scale": (duplicate_scale, "The run time of `image-search duplicates` by collection size."),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    for name, (module, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
