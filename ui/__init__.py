"""The Streamlit app's parts behind ``application_pages.py``: the Dashboard and Models pages,
the result view, navigation, texts, upload helpers and the background model pool."""
