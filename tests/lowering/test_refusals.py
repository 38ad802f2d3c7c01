"""Refused up front, each with one error naming everything wrong: ops TVM cannot lower, unknown
pipelines, tuning databases made for another target."""

from __future__ import annotations

import json

import pytest
import tvm

from hwlat.errors import InvalidInputError, UnsupportedOpError
from hwlat.lowering import compile_model
from hwlat.lowering.support import LoweringUnsupportedError
from hwlat.lowering.tuning import TARGET_MARKER, open_tuning_db
from tests.helpers import lowering_models as models

pytestmark = pytest.mark.tvm

SKYLAKE = {"kind": "llvm", "mcpu": "skylake"}
CASCADELAKE = {"kind": "llvm", "mcpu": "cascadelake"}


def test_every_unsupported_op_is_named_in_one_error(tmp_path):
    with pytest.raises(UnsupportedOpError) as info:
        compile_model(models.unsupported(tmp_path), output=tmp_path / "m.so")
    e = info.value
    assert isinstance(e, LoweringUnsupportedError)
    assert e.ops == {"Attention": 1, "hwlat.SparseConv3d": 2}
    assert str(e).startswith("TVM cannot lower 2 op type(s): Attention (x1): ")
    assert "hwlat.SparseConv3d (x2): strided sparse convs (subm=0) are not lowered" in str(e)
    assert not (tmp_path / "m.so").exists()


def test_unknown_pipeline_lists_the_choices(tmp_path):
    with pytest.raises(InvalidInputError,
                       match="unknown pipeline 'fast'; known: default, zero, static_shape_tuning"):
        compile_model(models.conv_relu(tmp_path), pipeline="fast")


def test_tuning_database_of_another_target_is_refused_naming_both(tmp_path):
    src = models.conv_relu(tmp_path)
    db = tmp_path / "db"
    compile_model(src, SKYLAKE, output=tmp_path / "a.tar", tuning_db=db)
    assert json.loads((db / TARGET_MARKER).read_text())["target"]["mcpu"] == "skylake"
    with pytest.raises(InvalidInputError, match=r"made for target llvm mcpu=skylake, not llvm "
                                                r"mcpu=cascadelake \(they differ in .*mcpu"):
        compile_model(src, CASCADELAKE, output=tmp_path / "b.tar", tuning_db=db)
    assert not (tmp_path / "b.tar").exists()


def test_tuning_database_is_reused_for_its_own_target(tmp_path):
    src, db = models.matmul_add(tmp_path), tmp_path / "db"
    first = compile_model(src, output=tmp_path / "a.so", tuning_db=db)  # zero trials: apply only
    again = compile_model(src, output=tmp_path / "b.so", tuning_db=db)
    for r in (first, again):
        assert (r.pipeline, r.tuning_db) == ("static_shape_tuning", db) and r.max_abs_diff < 1e-4
    assert json.loads((tmp_path / "b.so.json").read_text())["tuning_db"] == str(db)


def test_records_without_a_target_marker_are_refused(tmp_path):
    (tmp_path / "database_tuning_record.json").write_text("")
    with pytest.raises(InvalidInputError, match="has records but no hwlat-target.json"):
        open_tuning_db(tmp_path, tvm.target.Target(SKYLAKE))


@pytest.mark.parametrize("option", ["tuning_db", "tune_trials"])
def test_tuning_options_need_a_tuning_pipeline(tmp_path, option):
    kwargs = {"tuning_db": tmp_path / "db"} if option == "tuning_db" else {"tune_trials": 4}
    with pytest.raises(InvalidInputError, match="pipeline 'zero' does not tune.*static_shape_tuning"):
        compile_model(models.conv_relu(tmp_path), pipeline="zero", **kwargs)


def test_tuning_pipeline_needs_a_database_and_a_host_target(tmp_path):
    src = models.conv_relu(tmp_path)
    with pytest.raises(InvalidInputError, match=r"needs a tuning database \(--tuning-db DIR\)"):
        compile_model(src, pipeline="static_shape_tuning")
    with pytest.raises(InvalidInputError, match="target kind 'cuda' cannot be tuned here"):
        compile_model(src, "cuda", tuning_db=tmp_path / "db")
