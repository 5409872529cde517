from __future__ import annotations

import pytest

from strangler.config import load_config_text
from strangler.errors import ConfigError
from strangler.reconcile.config import parse_duration

SIDES = """
      legacy: {url: "postgresql+psycopg://db/legacy", table: crm.customers, key: [id]}
      new: {url: "postgresql+psycopg://db/new", table: profile.customers, key: [customer_id]}"""


def config(fields: str, extra: str = "", precedence: str = "") -> str:
    return f"""
precedence:
  entities:
    customer: {{groups: {{contact: {{fields: [/email], authority: legacy}}}}}}{precedence}
reconcile:
  jobs:
    customers:
      entity: customer{SIDES}
      fields: {fields}{extra}
"""


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), (90, 90), ("30s", 30), ("15m", 900), ("1h30m", 5400)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15 minutes", "0s", "-5", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_job_is_read_with_its_shorthand_and_schedule() -> None:
    job = load_config_text(config("{email: email}", "\n      every: 15m")).reconcile.jobs["customers"]
    assert job.every == 900 and job.specs()["email"].new == "email"


def test_fields_without_authority_are_listed_by_the_check() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(config("{email: email, full_name: name, phone: tel}"))
    message = str(info.value)
    assert "reconcile.jobs.customers.fields" in message and "/full_name, /phone" in message
    assert "/email" not in message.split("fields")[-1].split("(")[0]


def test_an_entity_without_rules_is_named() -> None:
    text = config("{email: email}").replace("entity: customer", "entity: invoice")
    with pytest.raises(ConfigError, match="entity 'invoice' has no precedence rule for the compared fields /email"):
        load_config_text(text)


def test_no_authority_report_allows_uncovered_fields() -> None:
    load_config_text(config("{email: email, note: note}", "\n      no_authority: report"))


@pytest.mark.parametrize(("change", "problem"), [
    (("table: crm.customers", "table: crm.customers, query: select 1"), "exactly one of 'table' or 'query'"),
    (("key: [customer_id]", "key: [a, b]"), "legacy has 1 key columns and new has 2"),
    (("fields: {email: email}", "fields: {email: email}\n      buckets: 1000"), "power of two"),
    (("fields: {email: email}", "fields: {email: email}\n      colour: red"), "unknown key"),
])
def test_bad_jobs_name_the_key(change: tuple[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        load_config_text(config("{email: email}").replace(*change))
    assert "reconcile.jobs.customers" in str(info.value)


def test_http_side_needs_placeholders_and_a_sql_side() -> None:
    http = 'new: {http: "http://svc/customers/{cid}", key: [customer_id]}'
    with pytest.raises(ConfigError, match="no placeholder for key customer_id"):
        load_config_text(config("{email: /email}").replace(SIDES.splitlines()[2].strip(), http))
    both = SIDES.replace('legacy: {url: "postgresql+psycopg://db/legacy", table: crm.customers, key: [id]}',
                         'legacy: {http: "http://svc/{id}", key: [id]}').replace(
        'new: {url: "postgresql+psycopg://db/new", table: profile.customers, key: [customer_id]}',
        'new: {http: "http://svc2/{customer_id}", key: [customer_id]}')
    with pytest.raises(ConfigError, match="at least one side must be SQL"):
        load_config_text(config("{email: /email}").replace(SIDES, both))
