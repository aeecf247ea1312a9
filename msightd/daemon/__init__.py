"""The daemon process (parent only): never imports cv2, av or numpy."""
