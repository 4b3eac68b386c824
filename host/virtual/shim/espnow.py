# Poisoned on the virtual unit (see _forbidden.py).
import _forbidden

_forbidden.refuse("espnow")
