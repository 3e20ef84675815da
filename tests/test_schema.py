"""The Alembic migrations are the only way the schema is made; the table
definitions the code uses must match what they create, on both backends."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bank_bridge.tables import metadata as bank_metadata
from telecom_pay.ledger import schema
from telecom_pay.ledger.tables import metadata as core_metadata
from telecom_pay.messaging import metadata as messaging_metadata
from telecom_pay.settlement import metadata as settlement_metadata


@pytest.mark.parametrize("metadata", [core_metadata, messaging_metadata, settlement_metadata, bank_metadata],
                         ids=["core", "messaging", "settlement", "bank"])
def test_migrations_match_tables(database_url, metadata):
    schema.upgrade(database_url)
    eng = sa.create_engine(schema.sync_url(database_url))
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    eng.dispose()
    # tables of other revisions (bank, messaging) are compared by their own tests
    def ours(d):
        obj = d[1]
        table = getattr(obj, "table", obj)
        return getattr(table, "name", None) in metadata.tables
    assert [d for d in diff if ours(d)] == []
    assert schema.current(database_url)


def test_upgrade_is_repeatable(sqlite_url):
    schema.upgrade(sqlite_url)
    first = schema.current(sqlite_url)
    schema.upgrade(sqlite_url)
    assert schema.current(sqlite_url) == first
