# main.py: start the gate. All the work is in unit.py (the wiring module); this file stays tiny so
# that a deployment can replace the application without touching the entry point.
import unit

unit.run()
