# The release this firmware belongs to; `host flash` compares it with the host's manifest.
VERSION = "0.1.0"
