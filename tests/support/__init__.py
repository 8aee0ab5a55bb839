"""Plain helpers the test modules share; fixtures live in tests/conftest.py.

Test modules import from here (and conftest.py does), never from each other: importing a test
module registers its tests and fixtures a second time in the importing module.
"""
