"""The live page (``driftwarden ui``): every model's drift, alerts, accuracy and versions, from the topics."""
