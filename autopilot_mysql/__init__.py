"""autopilot-mysql: the Autopilot-pattern HA supervisor for MariaDB, PID 1 of its container."""

__version__ = "0.1.0"
