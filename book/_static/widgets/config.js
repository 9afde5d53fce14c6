// Where the widget manager finds its own files.  embed-amd.js defines AMD modules named
// "@jupyter-widgets/..." and each takes the folder of its module URL as webpack's public
// path, from which it loads FontAwesome's fonts (icon buttons).  By default require.js
// puts those folders under the page's own folder, where nothing is; map every module
// into this folder (_static/widgets), which holds the fonts.
(function () {
  var here = document.currentScript.src.replace(/\/[^\/]*$/, "");
  var paths = { "@jupyter-widgets/html-manager/dist": here };
  ["base", "base7", "controls", "controls7", "html-manager", "output"].forEach(function (m) {
    paths["@jupyter-widgets/" + m] = here + "/" + m;
  });
  require.config({ paths: paths });
})();
