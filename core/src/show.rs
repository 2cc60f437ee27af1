//! `cryo show`: an image directory as readable text or JSON.
