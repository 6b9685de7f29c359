"""Built-in guidance schedules: unguided, target, trajectory, waypoint and hybrid."""
