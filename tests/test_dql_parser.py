"""DQL's parser (dql/): every statement form, the paper's four queries, error
positions and messages, selector patterns, and hostile text."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dql import DQLError, DQLSemanticError, DQLSyntaxError, parse
from dql import ast as A
from dql import patterns

# The paper's four example queries ([R] §III-B), adapted to our layer names.
Q1 = '''select m1 where m1.name like "cnn_%" and m1.creation_time > "2015-11-22"
        and m1["conv[1,3]"].next has POOL("MAX")'''
Q2 = '''slice m2 from m1 where m1.name like "cnn-origin%"
        mutate m2.input = m1["conv1"] and m2.output = m1["fc1"]'''
Q3 = '''construct m2 from m1 where m1.name like "cnn-avg%" and m1["conv*($1)"].next has POOL("AVG")
        mutate m1["conv*($1)"].insert = RELU("relu$1")'''
Q4 = '''evaluate m from "query3" with config = "train.json"
        vary config.base_lr in [0.1, 0.01, 0.001] and config.net["conv*"].lr auto
             and config.input_data in ["path1", "path2"]
        keep top(5, m["loss"], 100)'''


def test_q1_select_with_attributes_and_a_graph_condition():
    q = parse(Q1).query
    assert isinstance(q, A.Select) and q.var == "m1" and q.source == A.AllVersions("m1")
    like, cmp, has = q.where.items
    assert like == A.Like(A.Path("m1", (A.Field("name"),), like.left.pos), "cnn_%", False, like.pos)
    assert (cmp.left.text(), cmp.op, cmp.right) == ("m1.creation_time", ">", "2015-11-22")
    assert has.selector.pattern == "conv[1,3]" and has.selector.hops == ("next",)
    assert has.template.kind == "POOL" and has.template.args == ("MAX",)
    assert has.pos == (2, 13)


def test_q2_slice():
    q = parse(Q2).query
    assert isinstance(q, A.Slice) and q.var == "m2" and q.source == A.AllVersions("m1")
    assert (q.input.var, q.input.pattern, q.output.pattern) == ("m1", "conv1", "fc1")


def test_q3_construct_with_a_capture():
    q = parse(Q3).query
    assert isinstance(q, A.Construct)
    (edit,) = q.edits
    assert edit.action == "insert" and edit.selector.pattern == "conv*($1)" and edit.selector.hops == ()
    assert edit.template == A.Template("RELU", ("relu$1",), (), edit.template.pos)


def test_q4_evaluate():
    q = parse(Q4).query
    assert isinstance(q, A.Evaluate) and q.source == A.Named("query3", q.source.pos) and q.config == "train.json"
    lr, net, data = q.varies
    assert lr.path.text() == "config.base_lr" and lr.values == (0.1, 0.01, 0.001)
    assert net.path.steps == (A.Field("net"), A.Key("conv*"), A.Field("lr")) and net.values is None
    assert data.values == ("path1", "path2")
    assert (q.keep.rule, q.keep.k, q.keep.metric, q.keep.iterations) == ("top", 5, "loss", 100)


def test_other_forms():
    q = parse('SELECT m FROM (select m where m.hparams.lr < 1e-2) WHERE NOT (m.a = 1 OR m.b <> \'x\') '
              'and m.metrics["acc"][100] >= .9 and m.name not like "tmp%" -- a comment').query
    assert isinstance(q.source, A.Nested) and q.source.query.where.right == 0.01
    neg, acc, nl = q.where.items
    assert isinstance(neg, A.Not) and isinstance(neg.item, A.Or)
    assert neg.item.items[1].op == "!=" and neg.item.items[1].right == "x"
    assert acc.left.steps == (A.Field("metrics"), A.Key("acc"), A.Key(100)) and acc.right == 0.9
    assert nl.negated
    q = parse('construct m2 from m1 mutate m1["drop*"].delete and m1["fc1"].insert = '
              'LINEAR("fc1b", out_features=10, bias=true)').query
    assert [e.action for e in q.edits] == ["delete", "insert"]
    assert q.edits[1].template.kwargs == (("out_features", 10), ("bias", True))
    q = parse('evaluate m from "q" keep threshold(m["accuracy"] > 0.5, 20)').query
    assert (q.keep.rule, q.keep.op, q.keep.value, q.keep.iterations) == ("threshold", ">", 0.5, 20)
    q = parse('evaluate m from "q" keep top(2, m["score"], 10, order="min")').query
    assert q.keep.order == "min"
    assert parse('select m where m.x = null and m.y == true').query.where.items[0].right is None


@pytest.mark.parametrize("text,line,col,expected", [
    ("select", 1, 7, "a name"),
    ("select m where", 1, 15, "a name"),
    ("select m where m.x >", 1, 21, "a number"),
    ("selec m", 1, 1, "select"),
    ("select m\nwhere m.x > 1 m.y", 2, 15, "and"),
    ('select m where m.x = "open', 1, 22, None),
])
def test_syntax_errors_name_line_column_and_expected(text, line, col, expected):
    with pytest.raises(DQLSyntaxError) as ei:
        parse(text)
    e = ei.value
    assert (e.line, e.column) == (line, col), str(e)
    if expected:
        assert expected in e.expected, e.expected
    assert f"line {line}, column {col}" in str(e) and "^" in str(e)


@pytest.mark.parametrize("text,needle", [
    ("", "empty query"),
    ('select m where q.name = "x"', "unknown variable 'q'"),
    ('slice m2 from m1 mutate m2.input = m1["a"]', "m2.output"),
    ('slice m2 from m1 mutate m2.input = m1["a"] and m2.input = m1["b"] and m2.output = m1["c"]', "set twice"),
    ('slice m2 from m1 mutate m2.input = m1.name and m2.output = m1["c"]', "layer selector"),
    ('select m where m["conv[1"] has POOL("MAX")', "never closed"),
    ('select m where m["conv[]"] has POOL("MAX")', "empty brackets"),
    ('select m where m["x"].kernel has POOL("MAX")', ".next and .prev"),
    ('select m where m.name has POOL("MAX")', "layer selector"),
    ('select m where m["x"] has pool("MAX")', "upper-case"),
    ('select m where m["x"] has POOL(m.name)', "values"),
    ('construct m2 from m1 mutate m1["a"].insert = RELU("r$1")', "$1 is used before"),
    ('construct m2 from m1 mutate m1["a"]', ".insert"),
    ('construct m2 from m1 mutate m1["a"].delete = RELU("r")', "no value"),
    ('evaluate m from "q" keep top(0, m["loss"], 10)', "positive integer"),
    ('evaluate m from "q" keep top(2, m.loss, 10)', "metric"),
    ('evaluate m from "q" keep best(2)', "top(...) or threshold"),
    ('evaluate m from "q" keep threshold(m["loss"] = 1, 10)', "<, <="),
    ('evaluate m from "q" vary lr in [0.1]', "config.<name>"),
    ('evaluate m from "q" vary config.lr in []', "no values"),
    ('evaluate m from "q" with cfg = "x"', "with config"),
    ('select m where m["a[1-99999]"] has POOL("MAX")', "bad range"),
])
def test_semantic_errors_are_typed_and_clear(text, needle):
    with pytest.raises(DQLError) as ei:
        parse(text)
    assert needle in str(ei.value), str(ei.value)
    assert not isinstance(ei.value, DQLSyntaxError) or needle == "empty query"


def test_errors_are_bad_input():
    from pas.errors import BadInput
    with pytest.raises(BadInput):
        parse("select m where")
    with pytest.raises(DQLSemanticError):
        parse('select m where z.a = 1')


def test_selector_patterns():
    names = ["conv1", "conv2", "conv3", "conv10", "pool1", "fc1", "encoder.layer.0.attn"]
    assert [n for n, _ in patterns.match("conv[1,3]", names)] == ["conv1", "conv3"]
    assert [n for n, _ in patterns.match("conv[1-3]", names)] == ["conv1", "conv2", "conv3"]
    assert [n for n, _ in patterns.match("conv?", names)] == ["conv1", "conv2", "conv3"]
    assert patterns.match("conv*($1)", names)[3] == ("conv10", {"$1": "10"})
    assert [n for n, _ in patterns.match("encoder.layer.*.attn", names)] == ["encoder.layer.0.attn"]
    assert patterns.match("encoder.layer.0.attn", ["encoderXlayerX0Xattn"]) == []   # dots are literal
    assert patterns.match("relu$1", ["relu3", "relu4"], {"$1": "3"}) == [("relu3", {})]
    assert patterns.substitute("relu$1", {"$1": "7"}) == "relu7"
    assert patterns.substitute("conv*($1)", {}) == "conv*($1)"   # a definition stays
    with pytest.raises(DQLSemanticError):
        patterns.substitute("relu$2", {"$1": "7"})
    with pytest.raises(DQLSemanticError):
        patterns.compile_selector("a*($1)b*($1)")


def test_like():
    assert patterns.like("cnn_v1", "cnn\\_%") and not patterns.like("cnnXv1", "cnn\\_%")
    assert patterns.like("cnn-origin-2", "cnn-origin%") and patterns.like("ab", "a_")
    assert not patterns.like("abc", "a_") and not patterns.like(None, "%")
    assert patterns.like("a.b", "a.b") and not patterns.like("axb", "a.b")   # . is literal


def test_deep_nesting_and_huge_text_are_refused_cleanly():
    with pytest.raises(DQLError, match="deeper"):
        parse("select m where " + "(" * 5000 + "m.a = 1" + ")" * 5000)
    with pytest.raises(DQLError, match="longer"):
        parse("select m where m.a = " + "1" * 200_000)
    nested = "select m where m.a = 1"
    for _ in range(20):
        nested = f"select m from ({nested})"
    assert isinstance(parse(nested).query.source, A.Nested)


_WORDS = ["select", "slice", "construct", "evaluate", "from", "where", "mutate", "with", "vary", "keep", "in",
          "auto", "and", "or", "not", "like", "has", "m", "m1", "config", ".", "[", "]", "(", ")", ",", "=",
          "==", "<", ">=", '"conv*($1)"', '"a%"', "'x'", "1", "-2.5e3", "POOL", "RELU", "top", "threshold",
          "next", "insert", "delete", "input", "output", "$1", '"[1-3"', "true", "null", "--c\n", "\n", "é"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=30))
def test_token_soup_never_escapes_untyped(words):
    try:
        parse(" ".join(words))
    except DQLError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_escapes_untyped(text):
    try:
        parse(text)
    except DQLError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("conv*?[],-()$1") + ["$2", "($1)", "a", "."]), max_size=20))
def test_random_patterns_compile_or_fail_typed(pieces):
    pattern = "".join(pieces)
    try:
        patterns.match(pattern, ["conv1", "conv22", "a.b"])
    except DQLError:
        pass
