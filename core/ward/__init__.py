"""Ward scale: beds and a central station over MQTT (Eclipse Mosquitto), and the HL7 gateway.

paho-mqtt lives only here (an import-linter contract says so); the bedside engine in
core.live knows nothing of the bus. Needs the ``ward`` extra: ``pip install "painmon[ward]"``.
"""
