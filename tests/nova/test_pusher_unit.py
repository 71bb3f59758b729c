"""Unit tests of the Nova pusher's pure parts (no cloud)."""

from __future__ import annotations

import pytest

from vimprof.errors import VimprofError
from vimprof.pushers.nova import NovaPusher, NovaRunRecord, iso_to_ns, new_request_id


def test_iso_to_ns_nova_formats():
    assert iso_to_ns("1970-01-01T00:00:01.000000") == 1_000_000_000
    assert iso_to_ns("2026-11-21T14:02:03.250000+00:00") == iso_to_ns("2026-11-21T14:02:03.25Z")
    assert iso_to_ns("2026-11-21T14:02:03.250000") % 1_000_000_000 == 250_000_000
    assert iso_to_ns(None) is None


def test_request_id_form():
    rid = new_request_id()
    assert rid.startswith("req-") and len(rid) == 40 and rid != new_request_id()


def test_record_durations_and_aliases():
    rec = NovaRunRecord(run=0, name="n", t_submit_ns=1_000_000, t_accepted_ns=3_000_000,
                        t_active_ns=11_000_000, t_delete_ns=20_000_000, t_gone_ns=25_000_000)
    d = rec.as_json()
    assert (d["api_ms"], d["active_ms"], d["delete_ms"]) == (2.0, 10.0, 5.0)
    assert d["t_registered_ns"] == 3_000_000 and d["t_running_ns"] == 11_000_000
    assert d["vim"] == "nova" and "actions" not in d


def test_record_of_failed_run_has_no_durations():
    d = NovaRunRecord(run=1, name="n", t_submit_ns=5, error="server went to ERROR").as_json()
    assert d["active_ms"] is None and d["delete_ms"] is None and not d["ok"]


def test_microversion_below_2_37_refused():
    with pytest.raises(VimprofError, match="2.37"):
        NovaPusher(conn=None, microversion="2.36")
