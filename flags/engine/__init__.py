"""The flag evaluation engine: documents, validation and evaluation, with no Django in sight.

The server (on save and in the editor's preview), the Python SDK and test tools all
use this package, and its behaviour is pinned by the shared JSON vectors in
``tests/vectors/``. docs/flags.md is the guide. Modules, one concept each:

- ``document``: the document shapes, kinds, operators and limits;
- ``validation``: ``validate_flag``/``validate_segment`` → errors with field paths;
- ``schema``: the published JSON Schemas;
- ``attributes``: attribute references (``"email"``, ``"/address/city"``);
- ``operators``: what each clause operator accepts and tests;
- ``safe_regex``: the linear-time ``matches`` patterns;
- ``semver``, ``instants``: versions and points in time for their operators;
- ``clauses``, ``segments``: compiled clauses and segment membership;
- ``bucketing``: the portable rollout hash and bucket → variation mapping;
- ``result``: ``EvaluationResult``, ``Reason`` and their kinds;
- ``evaluation``: ``compile_flag``, ``CompiledFlag.evaluate`` and ``evaluate``;
- ``bench``: the evaluations-per-second micro-benchmark.

Typical use::

    from flags.engine import compile_flag, compile_segment

    flag = compile_flag(doc)                      # once per received document
    segments = {"beta": compile_segment(seg_doc)}
    result = flag.evaluate({"key": "user-1", "country": "NZ"}, segments, default=False)
    result.value, result.variation_index, result.reason.kind
"""

from flags.engine.bucketing import bucket
from flags.engine.document import (
    MAX_DOCUMENT_BYTES,
    WEIGHT_SCALE,
    FlagDocument,
    FlagKind,
    Operator,
    SegmentDocument,
    new_salt,
)
from flags.engine.evaluation import CompiledFlag, compile_flag, error_result, evaluate
from flags.engine.result import ErrorKind, EvaluationResult, Reason, ReasonKind
from flags.engine.schema import flag_schema, segment_schema
from flags.engine.segments import CompiledSegment, compile_segment
from flags.engine.validation import (
    ValidationError,
    load_flag,
    load_segment,
    validate_flag,
    validate_segment,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "WEIGHT_SCALE",
    "CompiledFlag",
    "CompiledSegment",
    "ErrorKind",
    "EvaluationResult",
    "FlagDocument",
    "FlagKind",
    "Operator",
    "Reason",
    "ReasonKind",
    "SegmentDocument",
    "ValidationError",
    "bucket",
    "compile_flag",
    "compile_segment",
    "error_result",
    "evaluate",
    "flag_schema",
    "load_flag",
    "load_segment",
    "new_salt",
    "segment_schema",
    "validate_flag",
    "validate_segment",
]
