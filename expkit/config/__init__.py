"""The run config: structured schemas (Hydra's ConfigStore) and the semantic checks at the door."""
