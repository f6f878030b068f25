"""AWS entry points, thin: each turns an event into calls on the core and back."""
