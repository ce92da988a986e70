def test_demo_pages_render_for_a_coordinator(login):
    s = login("coord-hz")
    for url in ("/", "/subjects/", "/subjects/1", "/subjects/1/screening", "/subjects/1/audit"):
        response = s.get(url)
        assert response.status_code == 200, url
    assert b"HZ-S001" in s.get("/subjects/").data
