"""The broker's side of identity: MQTT connections (TLS, credentials) and the accounts Mosquitto's
dynamic security plugin enforces (one per device, one per ingestor), managed over its control topic."""
