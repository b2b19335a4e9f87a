"""pipelines: data stores and workflows around mia_core (may use ray/mlflow; mia_core may not)."""

# Bind Python's sqlite3 to the system SQLite before anything can load ecCodes: the
# eccodeslib/eckitlib wheels (GRIB input via cfgrib) bundle an older libsqlite3 (3.26), and
# whichever library loads first serves the whole process; MLflow's SQL store needs >= 3.31.
import sqlite3  # noqa: F401  (imported for its side effect)
