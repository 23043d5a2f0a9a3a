"""What a request does, apart from parsing it and shaping the answer: the routes call these, and no route calls
another route."""
