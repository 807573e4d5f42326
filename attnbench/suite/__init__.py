"""Benchmark suites: YAML files that expand into typed cases.

    load_suite(path, profile=None, *, cuda_available=None) -> LoadedSuite
    select_profile(suite_doc, requested, cuda_available) -> (name | None, reason)
    expand_cases(suite, *, cuda_available=None) -> list[Case]
    parse_seqlen("4K") -> 4096

`Suite` is the validated document model (the format is documented in
`attnbench.suite.schema`); `LoadedSuite` is what `load_suite` returns. Every problem
with a suite file is a one-line `attnbench.errors.UserError` naming file, line and path.
"""

from attnbench.suite.expand import expand_cases
from attnbench.suite.load import LoadedSuite, load_suite, load_suite_text, select_profile
from attnbench.suite.schema import Suite, parse_seqlen

__all__ = ["LoadedSuite", "Suite", "expand_cases", "load_suite", "load_suite_text", "parse_seqlen", "select_profile"]
