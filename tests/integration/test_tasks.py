"""The evaluation's tasks: the PTB-XL benchmark's six label sets from scp_statements.csv
(on the real published tables) and the binary tasks."""

import ast
import filecmp
import json
import pathlib
import types

import numpy as np
import pandas as pd
import pytest

from crema_jax.data import records
from crema_jax.evaluation import tasks


def _source(scp_codes, reader="ptbxl", labels=None):
  """What tasks.build reads of a PreparedSource: its index and manifest."""
  n = len(scp_codes)
  index = {"scp_codes": np.asarray([json.dumps(c) for c in scp_codes], np.str_),
           "labels": np.zeros((n, 5), np.uint8) if labels is None else labels}
  return types.SimpleNamespace(index=index, members=[], path=pathlib.Path("/prepared"),
                               manifest={"source": reader, "source_reader": reader})


@pytest.fixture(scope="module")
def database(shared_data):
  table = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database_head200.csv",
                      index_col="ecg_id")
  return {i: ast.literal_eval(c) for i, c in table["scp_codes"].items()}


def test_statements_are_ptbxls_and_the_label_sets_have_the_benchmarks_sizes(
    shared_data):
  assert filecmp.cmp(tasks.STATEMENTS, shared_data / "ptbxl" / "scp_statements.csv",
                     shallow=False)
  sizes = {name: len(set(m.values())) for name, m in tasks.statement_sets().items()}
  assert sizes == {"all": 71, "diagnostic": 44, "subdiagnostic": 23,
                   "superdiagnostic": 5, "form": 19, "rhythm": 12}


def test_every_code_counts_whatever_its_likelihood(database):
  # ecg 1: {'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}: LVOLT and SR have likelihood 0.
  expected = {"all": {"NORM", "LVOLT", "SR"}, "diagnostic": {"NORM"},
              "subdiagnostic": {"NORM"}, "superdiagnostic": {"NORM"},
              "form": {"LVOLT"}, "rhythm": {"SR"}}
  codes = [json.dumps(database[1])]
  for label_set, want in expected.items():
    classes, labels = tasks.label_set_matrix(codes, label_set)
    assert {c for c, v in zip(classes, labels[0]) if v} == want, label_set


def test_label_sets_on_the_real_table(database):
  codes = [json.dumps(c) for c in database.values()]
  table = tasks.statements()
  for label_set in tasks.LABEL_SETS:
    classes, labels = tasks.label_set_matrix(codes, label_set)
    assert classes == tuple(sorted(classes)) and labels.sum(axis=0).min() >= 1
    for row, record in zip(labels, database.values()):
      got = {c for c, v in zip(classes, row) if v}
      if label_set in ("all", "diagnostic", "form", "rhythm"):
        column = {"all": None, "diagnostic": "diagnostic", "form": "form",
                  "rhythm": "rhythm"}[label_set]
        want = {c for c in record if column is None or table.at[c, column] == 1}
      else:
        field = {"subdiagnostic": "diagnostic_subclass",
                 "superdiagnostic": "diagnostic_class"}[label_set]
        want = {table.at[c, field] for c in record if table.at[c, "diagnostic"] == 1}
      assert got == want


def test_tasks_keep_only_records_with_one_of_their_labels():
  source = _source([{"NORM": 100.0, "SR": 0.0}, {"IMI": 50.0, "AFIB": 0.0},
                    {"LVOLT": 0.0, "SR": 0.0}, {"CRBBB": 100.0, "LVH": 80.0}])
  built = tasks.build(tasks.TASKS, source)
  sup = built["superdiagnostic"]
  assert sup.classes == ("NORM", "MI", "CD", "HYP")  # STTC does not occur.
  np.testing.assert_array_equal(sup.keep, [True, True, False, True])  # No superclass.
  np.testing.assert_array_equal(built["rhythm"].keep, [True, True, True, False])
  np.testing.assert_array_equal(built["form"].keep, [False, False, True, False])
  assert built["rhythm"].classes == ("AFIB", "SR")
  mi = built["MI"]
  np.testing.assert_array_equal(mi.labels[:, 0], [0, 1, 0, 0])
  np.testing.assert_array_equal(mi.keep, sup.keep)
  assert "vs. the rest" in mi.definition
  np.testing.assert_array_equal(built["STTC"].labels[:, 0], [0, 0, 0, 0])
  described = tasks.describe(sup, {"test": np.array([0, 2, 3])})
  assert described["ecgs"] == {"test": 2}
  assert described["positives"]["test"]["CD"] == 1


def test_other_sources_offer_the_superclass_tasks_only():
  labels = records.labels_from_classes(["MI"])[None].repeat(2, 0)
  labels[1] = 0
  source = _source([{"164865005": 1.0}, {}], reader="cinc", labels=labels)
  built = tasks.build(("superdiagnostic", "MI"), source)
  assert built["superdiagnostic"].classes == records.SUPERCLASSES
  np.testing.assert_array_equal(built["MI"].keep, [True, False])
  with pytest.raises(ValueError, match="need PTB-XL's SCP statements"):
    tasks.build(("rhythm",), source)
  with pytest.raises(ValueError, match="unknown task"):
    tasks.build(("AFIB",), source)
