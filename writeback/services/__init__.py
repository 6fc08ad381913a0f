"""Domain services: every change to the ledger goes through a function here.

The API, the console and the management commands all call the same functions.
"""
