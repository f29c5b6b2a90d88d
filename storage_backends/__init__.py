"""Where image bytes live: building the image storage and naming its objects."""
