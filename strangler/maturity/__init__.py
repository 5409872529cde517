"""The maturity ledger: each change's journey through accepted, applied, propagated and reconciled
(`ledger`), kept in the store (`store`), served and watched (`api`, `monitor`).

Nothing is imported here: the configuration model (`strangler.maturity.config`) is loaded by every command.
"""
