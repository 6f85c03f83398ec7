"""MQTT shared by the daemon's sink and `push-edge`: the `[mqtt]` settings, the paho client and Home
Assistant discovery."""
