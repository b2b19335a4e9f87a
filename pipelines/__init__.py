"""pipelines: data stores and workflows around mia_core (may use ray/mlflow; mia_core may not)."""
